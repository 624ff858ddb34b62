"""The GPU path: on CUDA wherever PyTorch sees a GPU, and the same test bodies on the CPU everywhere.

Every test here takes a device, "cpu" or "cuda". The "cuda" cases are marked ``cuda`` and
skipped by ``tests/conftest.py`` when ``torch.cuda.is_available()`` is False; the "cpu" cases
run in every suite, so the logic of each test is known to work before a GPU ever runs it.
On a machine with a GPU: ``python -m pytest -m cuda`` (or ``benchmarks/device_check.py``,
which runs them first).

Float32 comparisons turn TF32 off for the test (``exact_float32``): with it, cuBLAS and cuDNN
round products to 10 mantissa bits and no float32 tolerance would hold.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import vrnnkit
from vrnnkit.io.export import GenerativeStep, state_size
from vrnnkit.model.fused import fused_filter_supported
from vrnnkit.training import TrainConfig, make_scaler, train_step

from .conftest import train_cli

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


@pytest.fixture
def exact_float32():
    """TF32 off in cuBLAS and cuDNN for the test, restored after it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _vector_model() -> vrnnkit.VRNN:
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(28,), h_dim=48, z_dim=8, encoder="mlp", decoder="mlp", likelihood="bernoulli")
    return vrnnkit.VRNN(config)


def _conv_model() -> vrnnkit.VRNN:
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(1, 16, 16), h_dim=32, z_dim=4,
                                encoder_options={"channels": 4}, decoder_options={"channels": 4})
    return vrnnkit.VRNN(config)


def _binary(*shape: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def _loss_and_grads(model: vrnnkit.VRNN, x: torch.Tensor, *, fused: bool, objective: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and every gradient, on the CPU. The noise comes from a CPU generator, which
    draws the same numbers whatever the model's device (``vrnnkit.blocks.distributions.randn``)."""
    model.fused_loop = fused
    model.zero_grad(set_to_none=True)
    out = model(x, generator=torch.Generator().manual_seed(0), objective=objective, particles=4 if objective == "iwae" else 1)
    out.loss.backward()
    return out.loss.detach().cpu(), {name: p.grad.detach().cpu() for name, p in model.named_parameters()}


def _assert_float32_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal up to float32 rounding: 1e-4 relative, and 1e-4 of the tensor's largest value
    for elements near zero (sums in another order round differently)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale + 1e-7, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_loop_matches_the_autograd_loop_in_float32(device, objective, exact_float32):
    model = _vector_model().to(device)
    assert fused_filter_supported(model.posterior, model.rnn, model.phi_z)
    x = _binary(6, 12, 28).to(device)
    fused_loss, fused_grads = _loss_and_grads(model, x, fused=True, objective=objective)
    loss, grads = _loss_and_grads(model, x, fused=False, objective=objective)
    _assert_float32_close(fused_loss, loss, "loss")
    for name, grad in grads.items():
        _assert_float32_close(fused_grads[name], grad, name)
    # And the same figures as the CPU's: same weights, same noise.
    cpu_loss, cpu_grads = _loss_and_grads(model.cpu(), x.cpu(), fused=False, objective=objective)
    _assert_float32_close(loss, cpu_loss, "loss against the CPU")
    for name, grad in cpu_grads.items():
        _assert_float32_close(grads[name], grad, f"{name} against the CPU")


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_saved_on_the_device_loads_on_the_cpu_and_back(device, tmp_path, exact_float32):
    model = _conv_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _binary(3, 5, 1, 16, 16).to(device)
    model(x, generator=torch.Generator().manual_seed(0)).loss.backward()
    optimizer.step()  # weights that are no longer their initial values

    on_cpu = vrnnkit.load(vrnnkit.save(model, tmp_path / "saved-on-device.safetensors"))
    assert {t.device.type for t in on_cpu.state_dict().values()} == {"cpu"}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(on_cpu.state_dict()[name], tensor.cpu(), rtol=0, atol=0, msg=name)

    back = vrnnkit.load(vrnnkit.save(on_cpu, tmp_path / "saved-on-cpu.safetensors"), device=device)
    assert {t.device.type for t in back.state_dict().values()} == {torch.device(device).type}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    with torch.no_grad():
        losses = [m.eval()(data, generator=torch.Generator().manual_seed(3)).loss.cpu() for m, data in ((back, x), (on_cpu, x.cpu()))]
    _assert_float32_close(losses[0], losses[1], "loss of the model loaded on the device against the CPU")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_training_stays_finite(device):
    model = _conv_model().to(device)
    start = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(precision="bf16", lr=1e-3, kl_anneal=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = make_scaler(config, torch.device(device))
    generator = torch.Generator().manual_seed(0)
    for step in range(4):
        x = _binary(4, 6, 1, 16, 16, seed=step).to(device)
        result = train_step(model, x, optimizer, scaler, config, step=step, generator=generator)
        assert result.finite, f"step {step}: loss {result.output.loss.item()}"
        assert math.isfinite(result.output.loss.item())
    for parameter in model.parameters():
        assert parameter.dtype == torch.float32  # autocast computes in bf16; the weights stay float32
        assert torch.isfinite(parameter).all()
    assert any(not torch.equal(before, parameter) for before, parameter in zip(start, model.parameters(), strict=True))


@pytest.mark.parametrize("device", DEVICES)
def test_train_command_on_the_device_and_its_run_moves_between_devices(device, tmp_path, tiny_config):
    run = tmp_path / "run"
    result = train_cli("--decoder", "convT", "--device", device, "--steps", "3", "--config", str(tiny_config), "--out", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["device"] == device
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3 and math.isfinite(records[-1]["loss"])
    model = vrnnkit.load(run / "model.safetensors")  # written from the device, read on the CPU
    assert next(model.parameters()).device.type == "cpu"

    # The run (model and Adam's state) resumes on the CPU, then on the device again.
    for step, where in ((5, "cpu"), (7, device)):
        result = train_cli("--resume", str(run), "--device", where, "--steps", str(step), "--quiet")
        assert result.exit_code == 0, result.output
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == step and math.isfinite(last["loss"]), last


@pytest.mark.parametrize("device", DEVICES)
def test_onnx_export_of_a_model_on_the_device(device, tmp_path, exact_float32):
    pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
    model = _vector_model().to(device).eval()
    report = vrnnkit.api.export(model, tmp_path / "model.onnx")
    assert report["max_abs_difference"] <= report["tolerance"]
    assert next(model.parameters()).device.type == torch.device(device).type  # the model stays where it was

    # The graph written computes what the model computes on its device.
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    state = torch.randn(3, state_size(model), generator=torch.Generator().manual_seed(4))
    noise = torch.randn(3, model.config.z_dim, generator=torch.Generator().manual_seed(5))
    got = session.run(None, {"state": state.numpy(), "noise": noise.numpy()})
    with torch.no_grad():
        expected = GenerativeStep(model)(state.to(device), noise.to(device))
    for name, a, b in zip(("params", "frame", "next_state"), got, expected, strict=True):
        _assert_float32_close(torch.from_numpy(a), b.cpu(), name)
