"""Failures that used to end in a traceback or a model of infinities: one line naming the key, tensor or value."""

from __future__ import annotations

import pytest
import torch

from asrmerge.cli import main
from asrmerge.merging.registry import get_method
from asrmerge.workflow.config import ConfigError, check_devices


@pytest.mark.parametrize("value", ["1e39", "-1e39", "nan", "inf", "101"])
def test_a_lambda_beyond_any_model_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--base", "b", "--task-vector", "t", f"--lambda={value}", "--out", "o"])
    assert "within ±100" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("where", ["device", "merge.device"])
def test_cuda_named_on_a_machine_without_one_is_refused_when_the_config_is_checked(where):
    config = {"device": "auto", "merge": {"device": "cpu"}}
    if where == "device":
        config["device"] = "cuda"
    else:
        config["merge"]["device"] = "cuda:0"
    with pytest.raises(ConfigError, match=f"config key {where}: .* no CUDA device"):
        check_devices(config)
    check_devices({"device": "auto", "merge": {"device": "auto"}})


def test_a_singular_gram_names_the_cause_and_the_remedy():
    regmean = get_method("regmean").fn
    taus, base = torch.randn(2, 3, 4), torch.zeros(3, 4)
    rank_one = torch.ones(2, 4, 4)  # every off-diagonal entry equal to the diagonal: singular at alpha 1
    with pytest.raises(ValueError, match="singular at alpha 1; a smaller alpha"):
        regmean(taus, base, statistics=rank_one, alpha=1.0)
    regmean(taus, base, statistics=rank_one, alpha=0.5)  # shrunk: invertible
    dead = torch.eye(4).repeat(2, 1, 1)
    dead[:, 2, 2] = 0
    with pytest.raises(ValueError, match="1 input dimension"):
        regmean(taus, base, statistics=dead, alpha=0.9)
