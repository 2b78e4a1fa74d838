"""scripts/mutation_check.py: every mutation's target line exists (so none silently tests nothing), and a
mutation whose target is gone fails the script instead of being skipped."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "mutation_check.py")


def _script():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_every_mutation_target_is_in_the_tree_exactly_once():
    script = _script()
    assert script.missing_targets(script.MUTATIONS) == []
    assert any("CAM sign" in m.name for m in script.MUTATIONS)


def test_a_gone_target_fails_the_script(tmp_path):
    script = _script()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\nx = 1\n")
    gone = script.Mutation("gone", "src/a.py", "x = 2", "x = 3", ("tests",))
    twice = script.Mutation("twice", "src/a.py", "x = 1", "x = 3", ("tests",))
    problems = script.missing_targets([gone, twice], str(tmp_path))
    assert [p.split(":")[0] for p in problems] == ["gone", "twice"]
    assert "is gone from src/a.py" in problems[0] and "occurs 2 times" in problems[1]


def test_the_script_exits_1_without_running_when_a_target_is_gone(tmp_path):
    text = open(SCRIPT, encoding="utf-8").read().replace('"cut = self.training and not self.backprop"',
                                                          '"cut = a line that is not there"')
    broken = tmp_path / "scripts" / "mutation_check.py"
    broken.parent.mkdir()
    broken.write_text(text)
    os.symlink(os.path.join(ROOT, "src"), tmp_path / "src")
    proc = subprocess.run([sys.executable, str(broken), "-k", "gradient cut"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILED   gradient cut removed") and "nothing was run" in proc.stdout
