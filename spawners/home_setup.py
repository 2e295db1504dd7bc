"""Filling a user's workbench home, run as the account the server will run as.

``python -m spawners.home_setup`` reads a plan (JSON on stdin) and writes what it did (JSON on
stdout). The local spawner runs it with the server's account, never as root: a home is
writable by that account, so anything in it may be a link planted by a server's code, and a
root process following such a link (copying examples, handing out a course, replacing
dataset links) could be made to write, remove or take over files anywhere. Run as the
server's own account, the same moves reach only what that account could reach anyway.

Only standard-library imports (and two small helpers without the config model), so the
extra process costs little at each spawn.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from datasets_mount.local import link_targets
from services.teaching.course import hand_out


def set_up_home(plan: dict[str, Any]) -> dict[str, Any]:
    """Carry out ``plan`` in ``plan['home']``; return the progress facts the spawner reports."""
    home = Path(plan["home"])
    done: dict[str, Any] = {"course_copied": None, "examples_copied": [], "datasets": [], "messages": []}
    project = plan.get("project")
    if project:
        links = home / "projects"
        links.mkdir(exist_ok=True)
        link = links / project["id"]
        if not link.is_symlink() and not link.exists():
            link.symlink_to(project["dir"], target_is_directory=True)
    examples = plan.get("examples")
    if examples and Path(examples).is_dir():
        target = home / "examples"
        target.mkdir(exist_ok=True)
        for notebook in sorted(Path(examples).glob("*.ipynb")):
            destination = target / notebook.name
            if not destination.exists() and not destination.is_symlink():
                shutil.copy2(notebook, destination)
                done["examples_copied"].append(notebook.name)
    course = plan.get("course")
    if course:
        done["course_copied"] = hand_out(Path(course["source"]), home / course["folder"])
    datasets = plan.get("datasets")
    if datasets is not None:
        linked, messages = link_targets(home / "datasets", datasets["targets"], datasets["reasons"])
        done["datasets"], done["messages"] = linked, messages
    return done


def main() -> int:
    plan = json.load(sys.stdin)
    os.umask(0o077)  # a home is its user's alone
    json.dump(set_up_home(plan), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
