"""Build hook: ship the top-level presets inside the package.

The canonical presets live in the repository's top-level `attacks/` and `recipes/`
folders (read in place by a source or editable checkout). A wheel gets copies at
`robust_pt/_data/attacks/*.yaml` and `robust_pt/_data/recipes/*.yaml`, where
`robust_pt.paths.preset_dir()` looks when there is no checkout around the package.
Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import setup
from setuptools.command.build_py import build_py

PRESET_KINDS = ("attacks", "recipes")


def _preset_files() -> list[str]:
    files: list[str] = []
    for kind in PRESET_KINDS:
        for pattern in ("*.yaml", "*.yml"):
            files.extend(glob(os.path.join(kind, pattern)))
    return sorted(files)


class BuildPyWithPresets(build_py):
    """build_py that also copies <kind>/*.yaml to <build_lib>/robust_pt/_data/<kind>/."""

    def _preset_targets(self) -> list[tuple[str, str]]:
        return [(src, os.path.join(self.build_lib, "robust_pt", "_data", src)) for src in _preset_files()]

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level folders in place
        for src, dst in self._preset_targets():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [dst for _, dst in self._preset_targets()]
        return outputs

    def get_source_files(self) -> list[str]:
        # sdist collects these, so a wheel built from the sdist has the presets too.
        return list(super().get_source_files()) + _preset_files()


setup(cmdclass={"build_py": BuildPyWithPresets})
