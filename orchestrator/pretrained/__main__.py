"""``python -m orchestrator.pretrained fetch``: every real model and data set (what scripts/setup runs)."""

from __future__ import annotations

import sys

from . import faces, ocr


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m orchestrator.pretrained fetch", file=sys.stderr)
        return 2
    sface = faces.prepare()
    root = ocr.fetch()
    print(f"pretrained: SFace + L2 normalize in {sface}, ORL beside it; PP-OCRv4 recogniser in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
