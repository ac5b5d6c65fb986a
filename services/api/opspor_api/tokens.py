"""Local tokens for `make run`:

    opspor-token issue --role school_system --municipality aalborg --school vestbjerg --ttl 3600
    opspor-token issuers     # the AUTH_ISSUERS value that trusts the local key

The ES256 key is generated on first use under var/auth/. Only a service whose AUTH_ISSUERS
includes that key (the devstack's services do) accepts these tokens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opspor_shared.auth import SCHOOL_BOUND_ROLES, Role
from opspor_shared.devstack.issuer import LocalIssuer

DEFAULT_DIR = Path("var") / "auth"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opspor-token", description=__doc__)
    parser.add_argument("--key-dir", type=Path, default=DEFAULT_DIR, help="default: var/auth")
    commands = parser.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="print a signed token")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
    issue.add_argument("--municipality", help="municipality id (all roles but operations)")
    issue.add_argument(
        "--school", action="append", default=[], help="school id; repeat for several"
    )
    issue.add_argument("--subject", help="sub claim (default: a generated one)")
    issue.add_argument("--client", help="azp claim: the client application")
    issue.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    commands.add_parser("issuers", help="print the AUTH_ISSUERS JSON that trusts the local key")
    args = parser.parse_args(argv)

    issuer = LocalIssuer(args.key_dir)
    if args.command == "issuers":
        print(issuer.issuers_json())
        return 0
    role = Role(args.role)
    if role is not Role.OPERATIONS and not args.municipality:
        parser.error(f"--municipality is required for {role}")
    if role in SCHOOL_BOUND_ROLES and not args.school:
        parser.error(f"--school is required for {role}")
    if not 1 <= args.ttl <= 30 * 24 * 3600:
        parser.error("--ttl must be between 1 second and 30 days")
    print(
        issuer.mint(
            role,
            municipality=args.municipality,
            schools=args.school,
            subject=args.subject,
            client=args.client,
            ttl_seconds=args.ttl,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
