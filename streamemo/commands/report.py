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
    from streamemo.session_report import MAX_TIMELINES, plain, write_report

    _memory_back_to_the_system()
    md, summaries = write_report(args.recording, args.output)
    for s in summaries[:MAX_TIMELINES]:
        top = max(s["shares"].items(), key=lambda kv: kv[1])
        heard = (f"mostly {plain(top[0], 30)} ({100 * top[1]:.0f} % of voiced time)" if s["voiced_s"] > 0
                 else "no voice heard")
        print(f"{plain(s['source'], 80)}: {s['voiced_s']:.0f} s of voice in {s['duration_s']:.0f} s; {heard}")
    if len(summaries) > MAX_TIMELINES:
        print(f"… and {len(summaries) - MAX_TIMELINES} more sources, summarised in {md}")
    drawn = min(len(summaries), MAX_TIMELINES)
    print(f"wrote {md} and {drawn} timeline PNG(s) in {args.output}")
    return 0


def _memory_back_to_the_system() -> None:
    """The CLI has glibc keep freed blocks of up to 16 MB for reuse (cli.keep_freed_memory,
    for the daemon's windows). A report's arrays grow past a megabyte and each is freed
    once: from the system and back to it, or the holes they leave in the heap count too."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD
    mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
