from django.core.management.base import BaseCommand, CommandError

from wallets.ledger import balances_drift, balances_rebuild


class Command(BaseCommand):
    help = "Recompute balances from ledger entries and report drift; --fix rewrites the cache."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fix", action="store_true", help="Rewrite drifted cached balances.")

    def handle(self, *args, fix: bool = False, **options) -> None:
        drift = balances_drift()
        if not drift:
            self.stdout.write(self.style.SUCCESS("Balances match their entries."))
            return
        for item in drift:
            self.stdout.write(
                f"{item.account} {item.currency}: "
                f"cached {item.cached}, entries say {item.from_entries}"
            )
        if fix:
            self.stdout.write(self.style.WARNING(f"Rewrote {balances_rebuild()} balance(s)."))
            return
        raise CommandError(f"{len(drift)} balance(s) drifted; run with --fix to rewrite them.")
