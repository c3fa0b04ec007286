"""Checkpoints: weights-only loading, key matching and its error, random states, the resume decision."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from prediction_cases import write_run_dir

from pipeline.inference.model import load_model
from pipeline.core.checkpoints import (
    AS_WEIGHTS,
    DEFAULT_EMA_DECAY,
    DEFAULT_KEPT_WEIGHTS,
    KEPT,
    LATEST,
    REFUSED_RUN_DIR,
    check_ema_decay,
    decide_resume,
    finished_epochs,
    load_checkpoint,
    load_matching_state,
    load_training_state,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_dict_of,
    unwrap,
)
from pipeline.core.errors import ConfigError


def _network(width: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, width, 3), torch.nn.ReLU(), torch.nn.Conv2d(width, 3, 1))


class _Wrapper(torch.nn.Module):
    """Stands in for ``DistributedDataParallel`` (``module``) and ``torch.compile`` (``_orig_mod``)."""

    def __init__(self, inner: torch.nn.Module, attribute: str) -> None:
        super().__init__()
        setattr(self, attribute, inner)


class _Planted:
    """Pickling this object runs ``Path.touch`` on load: what weights-only loading must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("checkpoints") / "run")


def test_file_names() -> None:
    assert (KEPT, LATEST) == ("model.pt", "latest.pt")


def test_the_bundle_config_sets_the_code_defaults_of_the_kept_weights() -> None:
    import yaml

    from pipeline.core.paths import BUNDLE_DIR

    config = yaml.safe_load((BUNDLE_DIR / "configs" / "train.yaml").read_text())
    assert (config["keep_weights"], config["ema_decay"]) == (DEFAULT_KEPT_WEIGHTS, DEFAULT_EMA_DECAY)
    assert check_ema_decay(config["ema_decay"]) == DEFAULT_EMA_DECAY
    for refused in (0, 1, -0.5, "fast", None):
        with pytest.raises(ConfigError, match="ema_decay"):
            check_ema_decay(refused)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    source, target = _network(), _network()
    with torch.no_grad():
        for parameter in target.parameters():
            parameter.zero_()
    save_checkpoint(source.state_dict(), tmp_path / "models" / KEPT)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [KEPT]  # no temporary left beside it
    assert load_weights(target, tmp_path / "models" / KEPT) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match=r"corrupt\.pt: not a loadable checkpoint \("):
        load_checkpoint(corrupt)
    with pytest.raises(ConfigError, match=r"corrupt\.pt: not a readable weights-only checkpoint \("):
        load_checkpoint(corrupt, AS_WEIGHTS)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(corrupt)
    assert "\n" not in str(error.value)


def test_pickled_objects_never_run(tmp_path: Path) -> None:
    marker, path = tmp_path / "planted", tmp_path / "unsafe.pt"
    torch.save({"network": _Planted(marker)}, path)
    for load in (load_checkpoint, load_training_state, lambda p: load_weights(_network(), p)):
        with pytest.raises(ConfigError, match="weights-only|not a loadable"):
            load(path)
    assert not marker.exists()


def test_state_dict_of_unwraps_prefixes_and_training_states() -> None:
    state = _network().state_dict()
    for payload in (
        state,
        {f"module.{k}": v for k, v in state.items()},
        {f"_orig_mod.module.{k}": v for k, v in state.items()},
        {"network": state, "epoch": 3},
        {"model": state},
        {"state_dict": state},
    ):
        assert list(state_dict_of(payload, "x.pt")) == list(state)
    with pytest.raises(ConfigError, match=r"x\.pt: does not hold a state_dict of tensors"):
        state_dict_of({"weights": [1, 2]}, "x.pt")


def test_unwrap_and_loading_into_a_wrapped_network() -> None:
    inner = _network()
    wrapped = _Wrapper(_Wrapper(inner, "_orig_mod"), "module")
    assert unwrap(wrapped) is inner and unwrap(inner) is inner
    source = _network(width=4)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(1.0)
    load_matching_state(wrapped, source.state_dict(), "x.pt")
    assert torch.equal(inner[0].weight, source[0].weight)


def test_mismatch_error_names_the_first_key_and_shapes() -> None:
    network = _network(width=4)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    wider = _network(width=8).state_dict()
    with pytest.raises(ConfigError) as error:
        load_matching_state(network, wider, "run/latest.pt")
    message = str(error.value)
    assert message.startswith("run/latest.pt: checkpoint does not match the configured network: 3 shape mismatch(es)")
    assert "'0.weight' has shape (8, 2, 3, 3) in the checkpoint but (4, 2, 3, 3) in the network" in message
    with pytest.raises(ConfigError, match=r"model\.pt: weights do not fit the network of the config: 1 shape mismatch"):
        load_matching_state(network, {**before, "2.weight": torch.zeros(3, 5, 1, 1)}, "model.pt", AS_WEIGHTS)
    with pytest.raises(ConfigError, match=r"1 missing key\(s\) \(e\.g\. '0\.bias'\)"):
        load_matching_state(network, {k: v for k, v in before.items() if k != "0.bias"}, "x.pt")
    with pytest.raises(ConfigError, match=r"1 unexpected key\(s\) \(e\.g\. 'extra'\)"):
        load_matching_state(network, {**before, "extra": torch.zeros(1)}, "x.pt")
    for key, value in network.state_dict().items():  # a refused load changes nothing
        assert torch.equal(value, before[key]), key


def test_training_state_loads_into_the_network(tmp_path: Path) -> None:
    source, target = _network(), _network()
    with torch.no_grad():
        target[0].weight.zero_()
    latest = tmp_path / LATEST
    save_checkpoint({"network": source.state_dict(), "epoch": 2, "rng": rng_state()}, latest)
    state = load_training_state(latest, target)
    assert state["epoch"] == 2 and torch.equal(target[0].weight, source[0].weight)
    save_checkpoint(source.state_dict(), latest)  # plain weights are not a training state
    with pytest.raises(ConfigError, match=r"latest\.pt: not a training checkpoint \(no 'network' state\)"):
        load_training_state(latest)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    random.seed(10), np.random.seed(20), torch.manual_seed(30)  # other states in between
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert again[0] == expected[0]
    np.testing.assert_array_equal(again[1], expected[1])
    assert torch.equal(again[2], expected[2])


def test_resume_decision(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "models"
    assert decide_resume(ckpt_dir, resume=False) is False  # a fresh folder starts afresh
    assert decide_resume(ckpt_dir, resume=True) is True  # asked for: loading then names the missing file
    assert finished_epochs(ckpt_dir) == 0
    save_checkpoint({"network": _network().state_dict(), "epoch": 4}, ckpt_dir / LATEST)
    assert finished_epochs(ckpt_dir) == 4
    assert decide_resume(ckpt_dir, resume=True) is True
    assert decide_resume(ckpt_dir, resume=False, same_configuration=True) is True  # the same command again
    with pytest.raises(ConfigError) as error:
        decide_resume(ckpt_dir, resume=False)
    assert str(error.value) == f"{ckpt_dir / LATEST}: {REFUSED_RUN_DIR}"


def test_wrapped_and_full_state_checkpoints_load(run_dir, tmp_path):
    state = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    for name, payload in (("ddp", {f"module.{k}": v for k, v in state.items()}), ("full", {"network": state, "epoch": torch.tensor(3)})):
        folder = tmp_path / name
        write_run_dir(folder)
        torch.save(payload, folder / "models" / "model.pt")
        loaded = load_model(folder)
        first = next(iter(state))
        assert torch.equal(loaded.network.state_dict()[first], state[first])


def test_pickled_objects_are_refused(tmp_path):
    unsafe = write_run_dir(tmp_path / "unsafe")
    torch.save({"weights": Path("/etc")}, unsafe / "models" / "model.pt")  # an arbitrary pickled object
    with pytest.raises(ConfigError, match="weights-only"):
        load_model(unsafe)
