"""streamemo keys: create a CURVE key pair (NAME.key public, NAME.key_secret private)."""

from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("name", metavar="NAME", help="whose keys: e.g. 'server' for a daemon or proxy, a person or host for a subscriber")
    parser.add_argument("--dir", type=Path, default=Path("."), metavar="DIR", help="where to write them (default: here)")
    parser.add_argument("--force", action="store_true", help="replace existing files of that name")


def main(args) -> int:
    from streamemo.security import create_key_pair

    public, secret = create_key_pair(args.dir, args.name, overwrite=args.force)
    print(f"public key: {public}   (hand it out)")
    print(f"secret key: {secret}   (mode 0600: keep it private)")
    print("A daemon or proxy uses its secret key with --curve-secret and lists allowed subscribers' "
          "public keys in the folder given to --curve-clients; a subscriber uses its secret key with "
          "--curve-secret and the server's public key with --curve-server.")
    return 0
