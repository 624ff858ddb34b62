from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest
from torch import nn

import vrnnkit
from vrnnkit import registry
from vrnnkit.errors import RegistryError


def test_builtin_blocks_are_listed_by_kind():
    assert {"mlp", "conv"} <= set(vrnnkit.list_blocks("encoder"))
    assert {"mlp", "convT"} <= set(vrnnkit.list_blocks("decoder"))
    assert {"mlp", "standard-normal"} <= set(vrnnkit.list_blocks("prior"))
    assert "mlp" in vrnnkit.list_blocks("posterior")
    assert {"gru", "lstm"} <= set(vrnnkit.list_blocks("rnn"))
    assert {"bernoulli", "gaussian", "gmm"} <= set(vrnnkit.list_blocks("likelihood"))
    everything = vrnnkit.list_blocks()
    assert set(everything) == set(registry.KINDS)


def test_unknown_name_lists_the_known_names_and_suggests_a_close_one():
    with pytest.raises(RegistryError) as info:
        vrnnkit.build("decoder", "convt", latent_dim=4, h_dim=4, frame_shape=(1, 8, 8), params_per_element=1)
    message = str(info.value)
    assert "unknown decoder block 'convt'" in message
    assert "Did you mean 'convT'?" in message
    assert "convT, convT-skip, convT-warp, mlp" in message


def test_unknown_kind_is_an_error_naming_the_kinds():
    with pytest.raises(RegistryError, match="the kinds are: encoder, decoder"):
        vrnnkit.list_blocks("decodr")


def test_register_build_and_refuse_a_second_registration_under_the_same_name():
    @vrnnkit.register("prior", "test-zero")
    class ZeroPrior(nn.Module):
        def __init__(self, h_dim: int, z_dim: int, scale: float = 1.0):
            super().__init__()
            self.z_dim, self.scale = z_dim, scale

    try:
        block = vrnnkit.build("prior", "test-zero", h_dim=3, z_dim=2, scale=0.5)
        assert isinstance(block, ZeroPrior) and block.scale == 0.5
        assert "test-zero" in vrnnkit.list_blocks("prior")
        with pytest.raises(RegistryError, match="already registered"):
            vrnnkit.register("prior", "test-zero")(type("Other", (nn.Module,), {}))
        replacement = type("Replacement", (nn.Module,), {})
        vrnnkit.register("prior", "test-zero", override=True)(replacement)
        assert registry.get_builder("prior", "test-zero") is replacement
    finally:
        registry.unregister("prior", "test-zero")
    assert "test-zero" not in vrnnkit.list_blocks("prior")


def _install_fake_distribution(tmp_path, module_source: str, entry: str) -> None:
    """A package with a ``vrnnkit.blocks`` entry point, found by importlib.metadata on sys.path."""
    (tmp_path / "fake_vrnn_plugin.py").write_text(textwrap.dedent(module_source))
    dist = tmp_path / "fake_vrnn_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-vrnn-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[vrnnkit.blocks]\nfake = {entry}\n")


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fake_vrnn_plugin", None)
    registry.unregister("decoder", "plugin-decoder")


def test_entry_point_plugin_is_loaded_on_first_lookup_and_trains(plugin_path, monkeypatch):
    _install_fake_distribution(
        plugin_path,
        """
        import torch
        from torch import nn
        from vrnnkit import register

        @register("decoder", "plugin-decoder")
        class PluginDecoder(nn.Module):
            def __init__(self, latent_dim, h_dim, frame_shape, params_per_element):
                super().__init__()
                self.shape = (params_per_element, *frame_shape)
                self.linear = nn.Linear(latent_dim + h_dim, params_per_element * int(torch.tensor(frame_shape).prod()))

            def forward(self, f, h):
                return self.linear(torch.cat([f, h], -1)).view(-1, *self.shape)
        """,
        "fake_vrnn_plugin",
    )
    assert any(ep.name == "fake" for ep in metadata.entry_points(group="vrnnkit.blocks"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert "plugin-decoder" in vrnnkit.list_blocks("decoder")

    import torch

    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(5,), h_dim=8, z_dim=2, decoder="plugin-decoder"))
    out = model(torch.rand(2, 3, 5))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.decoder.linear.weight.grad is not None


def test_a_broken_plugin_warns_and_leaves_the_builtin_blocks_usable(plugin_path, monkeypatch):
    _install_fake_distribution(plugin_path, "raise ImportError('missing thing')\n", "fake_vrnn_plugin")
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(RuntimeWarning, match="could not load block plug-in 'fake'.*missing thing"):
        names = vrnnkit.list_blocks("encoder")
    assert "mlp" in names


def test_a_plugin_entry_point_may_be_a_registration_function(plugin_path, monkeypatch):
    _install_fake_distribution(
        plugin_path,
        """
        from torch import nn
        from vrnnkit import register

        def register_blocks():
            register("decoder", "plugin-decoder")(type("PluginDecoder", (nn.Module,), {}))
        """,
        "fake_vrnn_plugin:register_blocks",
    )
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert "plugin-decoder" in vrnnkit.list_blocks("decoder")
