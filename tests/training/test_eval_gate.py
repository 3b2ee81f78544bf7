"""The eval report counts answers per quality-gate rule beside the rubric's score."""

from __future__ import annotations

from qmd_finetune.training.evaluate import EvalQuery, build_report
from qmd_finetune.training.prompts import format_for


def test_eval_report_counts_each_gate_rule():
    queries = [EvalQuery("docker compose networking", "tech"), EvalQuery("ssh key setup", "tech")]
    degenerate = "hyde: Docker compose networking connects services.\nlex: docker compose network\n"
    degenerate += "vec: docker-comdll\n" * 49
    good = "lex: ssh-keygen ed25519\nlex: ssh key authorized_keys\nvec: how do I set up ssh keys for a server"
    fmt = format_for("HuggingFaceTB/SmolLM2-135M-Instruct")
    report = build_report("m", None, queries, [degenerate, good], fmt, "q.txt", 1.0, "fp32")
    assert report["gate"] == {"repeated_lines": 1, "too_many_items": 1}
    assert report["results"][0]["gate"][0] == "repeated_lines: vec: docker-comdll x49"
    assert report["results"][1]["gate"] == []
