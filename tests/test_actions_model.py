"""A VRNN with a per-step input u_t (actions): alignment, exactness, masks, bounds, export."""

from __future__ import annotations

import pytest
import torch

import vrnnkit
from vrnnkit.errors import DataError
from vrnnkit.model import VRNN, VRNNConfig

VECTOR = {"frame_shape": (5,), "h_dim": 8, "z_dim": 3, "likelihood": "gaussian"}
IMAGE = {"frame_shape": (1, 12, 12), "h_dim": 8, "z_dim": 2, "encoder_options": {"channels": 4},
         "decoder_options": {"channels": 4}}
VARIANTS = {
    "mlp blocks read a_t": VECTOR,
    "a standard-normal prior, folded": {**VECTOR, "prior": "standard-normal"},
    "a conv decoder, folded": IMAGE,
    "a warp decoder with skips, folded": {**IMAGE, "decoder": "convT-warp", "skip_context": 2},
}


def _pair(options: dict, action_dim: int = 2) -> tuple[VRNN, VRNN]:
    """A model without inputs and the same model with them: every shared weight copied, the
    input's own weights zero (the embedding's output layer already is)."""
    plain = VRNN(VRNNConfig(**options)).double()
    acting = VRNN(VRNNConfig(**options, action_dim=action_dim, action_embedding=3)).double()
    theirs = acting.state_dict()
    with torch.no_grad():
        for name, value in plain.state_dict().items():
            target = theirs[name]
            target.zero_()
            target[tuple(slice(0, n) for n in value.shape)] = value
    return plain, acting


def _randomise_embedding(model: VRNN) -> None:
    with torch.no_grad():
        for parameter in model.action_input.parameters():
            parameter.normal_(0, 0.5)


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_with_zero_input_weights_the_model_is_the_one_without_inputs(options):
    plain, acting = _pair(options)
    x = torch.rand(3, 5, *options["frame_shape"], dtype=torch.float64)
    u = torch.randn(3, 5, 2, dtype=torch.float64)
    for objective, particles in (("elbo", 1), ("iwae", 3), ("fivo", 3)):
        a = plain(x, objective=objective, particles=particles, generator=torch.Generator().manual_seed(1))
        b = acting(x, actions=u, objective=objective, particles=particles, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(b.elbo, a.elbo, rtol=0, atol=1e-10)
    futures = [m.predict(x[:, :3], 2, 2, generator=torch.Generator().manual_seed(2), **kw)
               for m, kw in ((plain, {}), (acting, {"actions": u}))]
    torch.testing.assert_close(futures[1], futures[0], rtol=0, atol=1e-10)
    samples = [m.sample(2, 3, generator=torch.Generator().manual_seed(3), **kw)
               for m, kw in ((plain, {}), (acting, {"actions": u[:2, :3]}))]
    torch.testing.assert_close(samples[1], samples[0], rtol=0, atol=1e-10)


def test_step_t_reads_u_t_and_the_inputs_before_it_never_a_later_one():
    """The alignment: log p(x_t | .) depends on u_t (the input before frame t) and on earlier
    inputs through the state, never on u_{t+1}: shifting u by one step breaks this test."""
    model = VRNN(VRNNConfig(**VECTOR, action_dim=2)).double()
    _randomise_embedding(model)
    x = torch.rand(1, 5, 5, dtype=torch.float64)
    u = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    out = model(x, actions=u, generator=torch.Generator().manual_seed(0))
    for t in range(5):
        (grad,) = torch.autograd.grad(out.nll_per_step[t], u, retain_graph=True)
        reach = grad.abs().sum(-1)[0]
        assert (reach[: t + 1] > 0).all(), (t, reach)
        assert (reach[t + 1 :] == 0).all(), (t, reach)


def test_a_model_learns_frames_that_are_their_own_input_and_a_shifted_plan_breaks_them():
    """x_t = u_t: the frame is the input before it, nothing else. Trained briefly, the model
    predicts the frames under the recorded inputs, and not under the same inputs one step late."""
    torch.manual_seed(0)
    model = VRNN(VRNNConfig(frame_shape=(2,), h_dim=16, z_dim=2, likelihood="gaussian", action_dim=2, action_embedding=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        u = torch.randn(16, 8, 2)
        loss = model(u.clone(), actions=u, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    u = torch.randn(32, 8, 2, generator=torch.Generator().manual_seed(9))
    late = torch.cat([torch.zeros_like(u[:, :1]), u[:, :-1]], 1)
    errors = [float((model.predict(u[:, :3], 5, actions=plan)[:, 0] - u[:, 3:]).square().mean()) for plan in (u, late)]
    assert errors[0] < 0.2 < errors[1], errors


@pytest.mark.parametrize("poison", [float("nan"), 1e30])
def test_inputs_at_padded_steps_change_nothing(poison):
    model = VRNN(VRNNConfig(**VECTOR, action_dim=2))
    _randomise_embedding(model)
    x, u = torch.rand(3, 6, 5), torch.randn(3, 6, 2)
    mask = torch.ones(3, 6)
    mask[1, 4:] = mask[2, 2:] = 0
    poisoned = torch.where(mask.unsqueeze(-1) > 0, u, torch.full_like(u, poison))
    results = []
    for inputs in (u * mask.unsqueeze(-1), poisoned):
        model.zero_grad()
        out = model(x, mask=mask, actions=inputs, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        results.append((out.elbo.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("objective", ["elbo", "iwae", "fivo"])
def test_the_fused_loop_matches_the_autograd_loop_with_inputs(objective):
    model = VRNN(VRNNConfig(**VECTOR, action_dim=2)).double()
    _randomise_embedding(model)
    x, u = torch.rand(3, 5, 5, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64)
    particles = 1 if objective == "elbo" else 3
    results = []
    for fused in (True, False):
        model.fused_loop = fused
        model.zero_grad()
        out = model(x, actions=u, objective=objective, particles=particles, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(b, a)


def test_iwae_fivo_and_dreg_run_with_inputs_and_iwae_tightens():
    model = VRNN(VRNNConfig(**VECTOR, action_dim=2))
    _randomise_embedding(model)
    x, u = torch.rand(4, 5, 5), torch.randn(4, 5, 2)
    one = model.log_likelihood(x, 1, actions=u, generator=torch.Generator().manual_seed(0))
    many = model.log_likelihood(x, 64, actions=u, generator=torch.Generator().manual_seed(0))
    assert many.mean() > one.mean()
    fivo = vrnnkit.model.objectives.fivo_log_likelihood(model, x, 8, actions=u, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(fivo).all()
    out = model(x, actions=u, objective="iwae", particles=4, gradient="dreg")
    assert out.surrogate is not None and torch.isfinite(out.surrogate)


def test_one_step_functions_agree_with_the_batched_prediction():
    """``filter_step`` and ``generate_step`` (the exported graphs) give ``predict``'s frames."""
    model = VRNN(VRNNConfig(**VECTOR, action_dim=2)).double().eval()
    _randomise_embedding(model)
    x, u = torch.rand(2, 3, 5, dtype=torch.float64), torch.randn(2, 6, 2, dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    expected = model.predict(x, 3, actions=u, generator=generator)[:, 0]
    generator = torch.Generator().manual_seed(5)
    noise = model.noise(3, 2, x, generator)
    state = model.rnn.initial_state(2, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for t in range(3):
            state, _ = model.filter_step(x[:, t], state, noise[t], action=u[:, t])
        frames = []
        for t in range(3, 6):
            prior_noise = torch.randn((2, 3), generator=generator, dtype=x.dtype)
            _, frame, state, _ = model.generate_step(state, prior_noise, action=u[:, t])
            frames.append(frame)
    torch.testing.assert_close(torch.stack(frames, 1), expected)


def test_bad_inputs_are_data_errors_that_say_what_is_wrong():
    plain = VRNN(VRNNConfig(**VECTOR))
    acting = VRNN(VRNNConfig(**VECTOR, action_dim=2))
    x = torch.rand(2, 4, 5)
    with pytest.raises(DataError, match="trained without actions"):
        plain(x, actions=torch.zeros(2, 4, 2))
    with pytest.raises(DataError, match="takes an action per step"):
        acting(x)
    with pytest.raises(DataError, match=r"\(2, 4, 2\).*got \(2, 3, 2\)"):
        acting(x, actions=torch.zeros(2, 3, 2))
    with pytest.raises(DataError, match="non-finite"):
        acting(x, actions=torch.full((2, 4, 2), float("nan")))
    with pytest.raises(DataError, match="takes an action per step"):
        acting.sample(2, 3)
    with pytest.raises(DataError, match=r"\(2, 5, 2\)"):
        acting.predict(x[:, :3], 2, actions=torch.zeros(2, 3, 2))


def test_checkpoints_keep_the_inputs_and_old_configs_have_none(tmp_path):
    model = VRNN(VRNNConfig(**VECTOR, action_dim=3, action_embedding=5))
    _randomise_embedding(model)
    path = vrnnkit.save(model, tmp_path / "m.safetensors")
    loaded = vrnnkit.load(path)
    assert (loaded.config.action_dim, loaded.config.action_embedding) == (3, 5)
    x, u = torch.rand(2, 4, 5), torch.randn(2, 4, 3)
    torch.testing.assert_close(loaded(x, actions=u, generator=torch.Generator().manual_seed(0)).elbo,
                               model(x, actions=u, generator=torch.Generator().manual_seed(0)).elbo)
    old = {key: value for key, value in VRNNConfig(**VECTOR).to_dict().items() if not key.startswith("action")}
    assert VRNNConfig.from_dict(old).action_dim == 0


@pytest.mark.parametrize("options", [VECTOR, IMAGE], ids=["vectors", "images"])
def test_onnx_export_takes_the_input_and_matches_pytorch(options, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vrnnkit.io.export import export

    model = VRNN(VRNNConfig(**options, action_dim=2))
    _randomise_embedding(model)
    report = export(model, tmp_path / "world.onnx", steps=4)
    assert report["max_abs_difference"] <= 1e-4
    for name in ("world.onnx", "world.filter.onnx"):
        session = onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        assert "action" in [i.name for i in session.get_inputs()]


def test_pt2_export_takes_the_input(tmp_path):
    from vrnnkit.io.export import GenerativeStep, export, state_size

    model = VRNN(VRNNConfig(**VECTOR, action_dim=2)).eval()
    _randomise_embedding(model)
    report = export(model, tmp_path / "step.pt2", "pt2")
    assert "action" in report["graph"]
    program = torch.export.load(tmp_path / "step.pt2")
    state, noise, action = torch.zeros(3, state_size(model)), torch.randn(3, 3), torch.randn(3, 2)
    with torch.no_grad():
        expected = GenerativeStep(model)(state, noise, action)
    for got, want in zip(program.module()(state, noise, action), expected, strict=True):
        torch.testing.assert_close(got, want)
