"""Ultralytics without a network: its own config dir with sync off and a font, and no auto-install."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def _bundled_font() -> Path | None:
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return font if font.exists() else None
    except ImportError:
        return None


def prepare_ultralytics_env(config_dir: Path) -> dict[str, str]:
    """Create the settings and fonts ultralytics looks for and return the environment that keeps it offline.

    Call before `import ultralytics` (it reads YOLO_CONFIG_DIR at import); the variables are also set in
    os.environ of this process so children inherit them.
    """
    config_dir = Path(config_dir)
    settings_dir = config_dir / "Ultralytics"
    settings_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_dir / "settings.json"
    current = json.loads(settings.read_text()) if settings.exists() else {}
    current.update(
        {
            "sync": False,
            "hub": False,
            "wandb": False,
            "mlflow": False,
            "tensorboard": False,
            "comet": False,
            "clearml": False,
            "neptune": False,
            "dvc": False,
            "raytune": False,
        }
    )
    settings.write_text(json.dumps(current, indent=2))
    font = _bundled_font()
    if font is not None:
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            target = settings_dir / name
            if not target.exists():
                shutil.copyfile(font, target)
    env = {
        "YOLO_CONFIG_DIR": str(config_dir),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_VERBOSE": os.environ.get("YOLO_VERBOSE", "False"),
        "MPLBACKEND": "Agg",
    }
    os.environ.update(env)
    return env
