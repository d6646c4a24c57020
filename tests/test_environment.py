import re

import yaml

from helpers.core import config


def _pins(lines):
    return {line.strip() for line in lines if re.match(r"^[A-Za-z0-9_.\-]+==", line.strip())}


def test_environment_yml_installs_the_pinned_requirements():
    req = _pins((config.REPO_ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((config.REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == req
    assert "python=3.11" in env["dependencies"]
    assert all("==" in pin for pin in req) and "torch==2.14.1" in req and "torchvision==0.29.1" in req
