"""Where the demo keeps its state: everything under ``$NITROTLS_HOME/demo``.

Deleting that directory resets the demo (the simulated NSM's dev root and the local CA's root
stay in the data directory, as they would on a developer's machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nitrotls import home

BUNDLE_NAME = "demo"
DOMAIN = "localhost"  # resolves to this machine everywhere, and Pebble accepts it


@dataclass(frozen=True)
class DemoLayout:
    """Paths of the demo's files; :meth:`create` makes the directories (0700)."""

    root: Path

    @classmethod
    def under_home(cls) -> DemoLayout:
        return cls(home.data_dir() / "demo")

    def create(self) -> DemoLayout:
        for path in (self.root, self.images, self.store, self.pcrs, self.logs, self.ca, self.etc):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def images(self) -> Path:
        return self.root / "images"

    def image(self, role: str) -> Path:
        return self.images / role

    @property
    def pcrs(self) -> Path:
        return self.root / "pcrs"

    def pcrs_file(self, role: str) -> Path:
        return self.pcrs / f"{role}.json"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def store_spec(self) -> str:
        """The store as ``--store`` accepts it."""
        return f"dir:{self.store}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    @property
    def etc(self) -> Path:
        """Generated configuration: the KMS's credentials table, the allow list."""
        return self.root / "etc"

    @property
    def kms_data(self) -> Path:
        return self.root / "kms"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def endpoint(self) -> Path:
        return self.root / "endpoint.json"

    @property
    def children(self) -> Path:
        """PIDs of the processes the current (or last) run started."""
        return self.root / "children.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"
