"""Import the operator's local list of sanctioned addresses.

    manage.py sanctions_import FILE [--list NAME] [--replace]

FILE holds one address per line, or a CSV export with an address column (every 0x address
on a line is taken). `--replace` removes the list's addresses the file no longer holds.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from checkout.screening import sanctions_import


class Command(BaseCommand):
    help = "Import sanctioned addresses (one per line, or a CSV export) into the local list."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--list", default="local", help="the list's name, shown on a hit")
        parser.add_argument(
            "--replace", action="store_true", help="remove this list's addresses not in the file"
        )

    def handle(self, *args, file: Path, list: str, replace: bool, **options) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a readable file.")
        result = sanctions_import(path=file, list_name=list[:80], replace=replace)
        if result.added + result.already == 0:
            raise CommandError(f"No 0x address found in {file}; nothing imported.")
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.added} address(es) added, {result.already} already listed, "
                f"{result.removed} removed; {result.lines_without_address} line(s) without an "
                "address skipped."
            )
        )
