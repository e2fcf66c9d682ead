"""How long redacting a large answer takes: `Redactor` on a 1 MB text of prose and code-like words (with the
prefixes the key shapes start with), five configured secrets of different shapes, one of them in the text.

Run: `python -m bench.redaction [--megabytes 1] [--repeat 7]`; prints the best time of each method.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from mcp_llm_server.redact import Redactor

SECRETS = [
    "sk-proj-Q3vN8xLw2Rt6Yp0Zk4Hs7Jd1Fb5Gm9Ca_Xe-Tu",
    "sk-ant-api03-Xy7Lq2Vn9Rb4Tk6Hm1Pz8Wc3Jd5Fg0Se-Ua_Io",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "tok-Lr8Vq2Xn6Zb0Pw4Ys9Kd3Hf7Jm1Tc5Ga",
    "hunter42",
]
WORDS = ["the", "model", "answer", "def", "return", "value", "task-list", "token", "Bearer", "sk-", "eyJ", "gh"]


def best_ms(function: Callable[[str], str], text: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    size = int(args.megabytes * 1_000_000)
    rng = random.Random(7)
    text = " ".join(rng.choice(WORDS) for _ in range(size // 4))[:size]
    text = f"{text[: size // 2]} {SECRETS[2]} {text[size // 2 :]}"
    redactor = Redactor(SECRETS)
    assert SECRETS[2] not in redactor(text)
    for name, function in (("__call__", redactor), ("configured", redactor.configured)):
        print(f"Redactor.{name}: {best_ms(function, text, args.repeat):.1f} ms for {len(text):,} characters")


if __name__ == "__main__":
    main()
