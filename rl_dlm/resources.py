"""Where the shipped configuration lives: `conf/`, `recipes/` and the embedded model `checkpoints/tiny-llada`.

A source checkout (or an editable install) keeps them beside the package; a wheel ships them inside it
(`rl_dlm/conf`, `rl_dlm/recipes`, `rl_dlm/checkpoints`: pyproject.toml maps them there). `RL_DLM_HOME` overrides
both and is set for the config files, which name the embedded model as `${oc.env:RL_DLM_HOME}/checkpoints/...`.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_DEFAULT = _PACKAGE if (_PACKAGE / "recipes").is_dir() else _PACKAGE.parent
ROOT = Path(os.environ.setdefault("RL_DLM_HOME", str(_DEFAULT)))
EMBEDDED_MODEL = ROOT / "checkpoints" / "tiny-llada"
