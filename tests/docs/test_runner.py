"""The docs runner itself: markers, stated outputs, and a block broken on purpose fails."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("sybil")

from sybil import Document  # noqa: E402

from tests.docs.runner import parse_page, setup_page, teardown_page  # noqa: E402

PAGE = '''
# A page

```python
import os
x = [1, 2, 3]
len(x)        # -> 3: a remark after the literal
sum(x)        # -> 6
os.path.basename(os.getcwd())[:12]   # -> segattn-docs
```

<!-- docs: skip (needs the network) -->
```bash
curl https://example.com
```

```bash
echo "hello from $(basename "$PWD" | cut -c1-12)"
echo shortened=$SEGATTN_DOCS_SHORT
ls /   # -> ...
```

<!-- docs: output -->
```text
hello from segattn-docs
shortened=1
```

```text
a pseudo-command, not run
```
'''


def run_page(tmp_path, text: str) -> list:
    """Evaluate every block of ``text`` as the runner does; returns (line, outcome, message) per block."""
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text))
    doc = Document.parse(str(page), parse_page)
    setup_page(doc.namespace)
    results = []
    try:
        for example in doc.examples():
            try:
                example.evaluate()
                results.append((example.line, "passed", ""))
            except pytest.skip.Exception as exc:
                results.append((example.line, "skipped", str(exc)))
            except (AssertionError, pytest.fail.Exception, Exception) as exc:  # noqa: B014
                results.append((example.line, "failed", str(exc)))
    finally:
        teardown_page(doc.namespace)
    return results


def test_a_page_runs_with_its_markers_and_outputs(tmp_path):
    got = run_page(tmp_path, PAGE)
    assert [r[1] for r in got] == ["passed", "skipped", "passed", "passed"], got
    assert got[1][2] == "needs the network"


@pytest.mark.parametrize("original, broken, says", [
    ("sum(x)        # -> 6", "sum(x)        # -> 7", "the page says `# -> 7`, the code gives 6"),
    ("ls /   # -> ...", "ls /   # -> no such file", "the page says `-> no such file`"),
])
def test_a_block_broken_on_purpose_fails(tmp_path, original, broken, says):
    got = run_page(tmp_path, PAGE.replace(original, broken))
    failed = [r for r in got if r[1] == "failed"]
    assert len(failed) == 1 and says in failed[0][2], got


def test_output_block_that_was_not_printed_fails(tmp_path):
    got = run_page(tmp_path, PAGE.replace("shortened=1\n```", "shortened=0\n```"))
    assert got[-1][1] == "failed" and "shortened=0" in got[-1][2]


def test_a_failed_block_skips_the_rest_of_its_page(tmp_path):
    got = run_page(tmp_path, PAGE.replace("x = [1, 2, 3]", "x = [1, 2, 3]\nraise RuntimeError('broken')"))
    assert [r[1] for r in got] == ["failed", "skipped", "skipped", "skipped"], got
    assert "an earlier block of this page failed" in got[2][2]


def test_a_failing_bash_command_fails_its_block(tmp_path):
    got = run_page(tmp_path, PAGE.replace('echo shortened=$SEGATTN_DOCS_SHORT', "false\necho never"))
    assert got[2][1] == "failed" and "exited with 1" in got[2][2]


def test_unknown_markers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown docs marker"):
        run_page(tmp_path, PAGE.replace("docs: skip (needs the network)", "docs: skipp (typo)"))
