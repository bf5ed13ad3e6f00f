"""`streamemo report SESSION.jsonl -o DIR`: a recorded session -> timeline PNG + summary.

    streamemo subscribe --record session.jsonl      # while the daemon runs; Ctrl-C to stop
    streamemo report session.jsonl -o session-report
"""

from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("recording", type=Path, help="JSON lines as `streamemo subscribe` writes them")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="folder for timeline.png and report.md")


def main(args) -> int:
    from streamemo.session_report import write_report

    md, summaries = write_report(args.recording, args.output)
    for s in summaries:
        top = max(s["shares"].items(), key=lambda kv: kv[1])
        print(f"{s['source']}: {s['voiced_s']:.0f} s of voice in {s['duration_s']:.0f} s; mostly {top[0]} "
              f"({100 * top[1]:.0f} % of voiced time)")
    print(f"wrote {md} and {len(summaries)} timeline PNG(s) in {args.output}")
    return 0
