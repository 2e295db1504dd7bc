"""Where things live on the workbench's storage (pure path arithmetic).

The hub, the spawners and the sample gateway all see the same tree, locally or as Nomad
host/CSI volumes:

    <root>/homes/<user>/                  each user's home (the server's root directory)
    <root>/projects/<project>/            project workspace, shared by its members
    <root>/projects/<project>/samples/    de-identified pulls from the archive
    <root>/<dataset path>                 approved datasets, when the YAML gives a relative path
    <root>/gateway/                       the gateway's private state (keys, audit): never mounted
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"


def default_data_dir() -> Path:
    """$WORKBENCH_DATA_DIR, else ./var beside the checkout (the demo's choice)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "var"


@dataclass(frozen=True)
class StorageLayout:
    root: Path

    def home(self, username: str) -> Path:
        return self.root / "homes" / username

    def project_dir(self, project_id: str) -> Path:
        return self.root / "projects" / project_id

    def samples_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "samples"

    def gateway_dir(self) -> Path:
        return self.root / "gateway"

    def resolve(self, relative_or_absolute: str) -> Path:
        """A path from the YAML: absolute as given, relative under the root."""
        path = Path(relative_or_absolute)
        return path if path.is_absolute() else self.root / path
