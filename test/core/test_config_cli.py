"""``--set NAME=VALUE``: the command line's view of the configuration tree (train, eval, run, demo)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from structalign_ros.core.config import ConfigError
from structalign_ros.core.config_io import parse_assignments

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sim_default.pt"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "structalign_ros.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_values_take_the_type_of_their_field():
    values = parse_assignments(
        ["train.lr=1e-3", "train.steps=10", "objective.alpha=2", "runtime.device=0", "node.finetune=false"]
    )
    assert values == {
        "train.lr": 1e-3,  # YAML 1.1 reads 1e-3 as a string
        "train.steps": 10,
        "objective.alpha": 2.0,  # a float field holds a float, as its ROS parameter must
        "runtime.device": "0",  # a string field takes the text as it is
        "node.finetune": False,
    }
    assert parse_assignments(["modalities.rgb.topic=/cam=1"]) == {"modalities.rgb.topic": "/cam=1"}
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        parse_assignments(["train.lr"])


def test_config_prints_the_tree_with_the_set_values():
    proc = cli(
        "config", "--set", "train.lr=5e-4", "--set", "runtime.device=cuda:1", "--set", "train.threads=2"
    )
    assert proc.returncode == 0, proc.stderr
    tree = yaml.safe_load(proc.stdout)["/**"]["ros__parameters"]
    assert (tree["train"]["lr"], tree["runtime"]["device"], tree["train"]["threads"]) == (5e-4, "cuda:1", 2)


COMMANDS = {
    "train": ["train", "--bags", "no-such-bag"],
    "eval": ["eval", "--bags", "no-such-bag", "--model", str(SHIPPED)],
    "run": ["run", "--seconds", "1"],
    "demo": ["demo", "--seconds", "1"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.lrr=0.1", "train: unknown key(s) ['lrr']; valid keys are"),
        ("window.span_s=long", "window.span_s: expected a number, got 'long'"),
    ],
)
def test_a_bad_key_or_value_exits_1_with_one_line_before_anything_starts(command, assignment, message):
    proc = cli(*COMMANDS[command], "--set", assignment)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("structalign")]
    assert line.startswith(f"structalign {command}: {message}"), line
