"""Install the workflow's Snakemake profiles where ``snakemake --profile NAME`` finds them.

Snakemake looks a profile given by name (``--profile slurm``) up in the
working directory, then in its user config folder (on Linux
``$XDG_CONFIG_HOME/snakemake``, by default ``~/.config/snakemake``), then in its
site folder (``/etc/xdg/snakemake``). The profiles of this repository live in
``profiles/``; :func:`install_profile` copies one into the user folder, so the
command a user types works from any directory. An installed copy that was
edited since (a cluster's partition and account) is never overwritten unless
asked to (``force``).
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

#: The profiles that come with the workflow (profiles/<name>/config.yaml).
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ProfileError(RuntimeError):
    """A profile cannot be installed; the message names the path and the fix."""


def snakemake_profile_dir() -> Path:
    """The user folder in which Snakemake looks up profile names (it need not exist yet).

    Asked from Snakemake itself, so it is the folder Snakemake searches on this
    platform (``$XDG_CONFIG_HOME/snakemake`` or ``~/.config/snakemake`` on Linux).
    """
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir)


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def _differing_files(source: Path, installed: Path) -> list[str]:
    """Relative paths that are missing from, added to or different in ``installed``."""
    ours, theirs = _files(source), _files(installed)
    changed = [
        str(rel) for rel in sorted(ours & theirs)
        if not filecmp.cmp(source / rel, installed / rel, shallow=False)
    ]
    return sorted(map(str, ours ^ theirs)) + changed


def install_profile(
    name: str,
    source: str | Path | None = None,
    target_root: str | Path | None = None,
    force: bool = False,
) -> tuple[Path, str]:
    """Copy profile ``source`` (default ``profiles/<name>``) to ``<target_root>/<name>``.

    Args:
        name: the name to type after ``snakemake --profile``.
        source: a profile folder holding ``config.yaml``; default the
            repository's ``profiles/<name>``.
        target_root: default :func:`snakemake_profile_dir`.
        force: replace an installed copy that differs from ``source``.

    Returns:
        (installed folder, what happened: ``"installed"``, ``"unchanged"`` or ``"replaced"``).

    Raises:
        ProfileError: ``source`` is not a profile, or an installed copy differs
            (was edited) and ``force`` is false.
    """
    source = PROFILES_DIR / name if source is None else Path(source)
    if not (source / "config.yaml").is_file():
        shipped = sorted(p.parent.name for p in PROFILES_DIR.glob("*/config.yaml"))
        raise ProfileError(
            f"{source} is not a Snakemake profile (no config.yaml in it); profiles in "
            f"{PROFILES_DIR}: {', '.join(shipped) or 'none'}, or pass --source DIR"
        )
    target = Path(target_root or snakemake_profile_dir()) / name
    if not target.exists():
        shutil.copytree(source, target)
        return target, "installed"
    if not target.is_dir():
        raise ProfileError(f"{target} exists and is not a folder; move it away and run again")
    differing = _differing_files(source, target)
    if not differing:
        return target, "unchanged"
    if not force:
        raise ProfileError(
            f"{target} differs from {source} in {', '.join(differing)} (edited for your "
            "cluster?); keeping it. Run again with --force to replace it with a fresh "
            "copy (your edits are lost), or give the profile another name"
        )
    shutil.rmtree(target)
    shutil.copytree(source, target)
    return target, "replaced"
