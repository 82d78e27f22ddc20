import json

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from contracts.deploy import FACTORY_ARTIFACT_PATH
from merchants.money import price_gap
from wallets.chain import Chain, ChainError
from wallets.forwarders import implementation_address, parse_account_address
from wallets.models import (
    Asset,
    Balance,
    ChainCursor,
    DepositAddress,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Network,
    Transfer,
    Wallet,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services (scanner, ledger): admins read them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


class AssetInline(admin.TabularInline):
    model = Asset
    extra = 0
    fields = ("symbol", "name", "decimals", "contract_address", "enabled")


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "chain_id",
        "enabled",
        "confirmations",
        "rpc_status",
        "rpc_checked_at",
    ]
    list_filter = ["enabled", "is_dev", "rpc_ok"]
    search_fields = ["name", "slug", "chain_id"]
    readonly_fields = [
        "watch_halted",
        "rpc_ok",
        "rpc_error",
        "rpc_checked_at",
        "effective_rpc_url",
        "effective_multicall_address",
        "round_lease_until",
        "deposit_factory_status",
    ]
    inlines = [AssetInline]
    actions = ["check_rpc"]

    @admin.display(description="Deposit factory")
    def deposit_factory_status(self, network: Network) -> str:
        if not network.pk:
            return "Save the network first."
        url = reverse("admin:wallets_network_deploy_factory", args=[network.pk])
        if network.deposit_factory:
            return format_html('{} · <a href="{}">Deploy another</a>', network.deposit_factory, url)
        return format_html(
            '<a class="button" href="{}">Deploy the deposit factory with your browser wallet</a>',
            url,
        )

    def get_urls(self):
        urls = [
            path(
                "<int:pk>/deploy-factory/",
                self.admin_site.admin_view(self.deploy_factory_view),
                name="wallets_network_deploy_factory",
            )
        ]
        return urls + super().get_urls()

    def deploy_factory_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The operator's browser wallet (EIP-1193) sends the factory's creation; the page
        posts the created address back, which is checked on the node before it is saved."""
        network = get_object_or_404(Network, pk=pk)
        if not self.has_change_permission(request, network):
            return redirect("admin:index")
        error = ""
        if request.method == "POST":
            try:
                address = parse_account_address(request.POST.get("address", ""))
            except ValueError as failure:
                error = str(failure)
            else:
                try:
                    chain = Chain(
                        network.effective_rpc_url,
                        timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS,
                        attempts=2,
                    )
                    if chain.chain_id() != network.chain_id:
                        error = "The network's node is on another chain."
                    else:
                        error = chain.factory_check(
                            address, expected_implementation=implementation_address(address)
                        )
                except ChainError as failure:
                    error = f"The network's node does not answer: {failure}"
                if not error:
                    Network.objects.filter(pk=network.pk).update(deposit_factory=address)
                    self.message_user(
                        request, f"{network}: deposit factory {address} saved.", messages.SUCCESS
                    )
                    return redirect("admin:wallets_network_change", network.pk)
        artifact = json.loads(FACTORY_ARTIFACT_PATH.read_text())
        context = {
            **self.admin_site.each_context(request),
            "title": f"Deploy the deposit factory on {network}",
            "network": network,
            "bytecode": artifact["bytecode"],
            "chain_hex": hex(network.chain_id),
            "error": error,
            "opts": self.model._meta,
        }
        return TemplateResponse(
            request, "admin/wallets/deploy_factory.html", context, status=400 if error else 200
        )

    @admin.display(description="RPC")
    def rpc_status(self, network: Network) -> str:
        if network.watch_halted:
            return f"stopped: {network.watch_halted}"
        if not network.effective_rpc_url:
            return "not configured"
        if network.rpc_ok is None:
            return "not checked yet"
        return "ok" if network.rpc_ok else f"failing: {network.rpc_error[:80]}"

    @admin.action(description="Check the RPC node now")
    def check_rpc(self, request: HttpRequest, queryset: QuerySet[Network]) -> None:
        for network in queryset:
            try:
                chain = Chain(network.effective_rpc_url, timeout=5, attempts=1)
                chain_id, head = chain.chain_id(), chain.head()
            except ChainError as error:
                Network.objects.filter(pk=network.pk).update(
                    rpc_ok=False, rpc_error=str(error)[:2000], rpc_checked_at=timezone.now()
                )
                self.message_user(request, f"{network}: {error}", messages.ERROR)
                continue
            ok = chain_id == network.chain_id
            error_text = (
                "" if ok else f"node reports chain id {chain_id}, expected {network.chain_id}"
            )
            Network.objects.filter(pk=network.pk).update(
                rpc_ok=ok, rpc_error=error_text, rpc_checked_at=timezone.now()
            )
            level = messages.SUCCESS if ok else messages.ERROR
            self.message_user(
                request, f"{network}: {'ok, head ' + str(head) if ok else error_text}", level
            )


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = [
        "symbol",
        "name",
        "network",
        "decimals",
        "contract_address",
        "enabled",
        "priced",
    ]
    list_filter = ["network", "enabled", "symbol"]
    search_fields = ["symbol", "name", "contract_address"]
    readonly_fields = ["priced"]

    @admin.display(description="Offered to payers")
    def priced(self, obj: Asset) -> str:
        # Payers are never shown an asset without a real price; say why it is held back.
        gap = price_gap(obj.symbol)
        return f"No: {gap}" if gap else "Yes"


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ["merchant", "first_address", "key_id", "next_index", "is_demo", "created_at"]
    list_filter = ["is_demo"]
    search_fields = ["merchant__name", "first_address", "xpub", "key_fingerprint"]
    readonly_fields = [
        "merchant",
        "xpub",
        "key_fingerprint",
        "first_address",
        "next_index",
        "is_demo",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # merchants set their key in settings, where it is validated


@admin.register(DepositAddress)
class DepositAddressAdmin(ReadOnlyAdmin):
    list_display = ["address", "merchant", "derivation_path", "key_id", "created_at"]
    search_fields = ["address", "merchant__name"]
    list_filter = ["merchant"]
    list_select_related = ["merchant"]

    @admin.display(description="key")
    def key_id(self, address: DepositAddress) -> str:
        return address.key_fingerprint[:8] or "earlier key"


@admin.register(ChainCursor)
class ChainCursorAdmin(admin.ModelAdmin):
    list_display = ["network", "next_block", "updated_at"]


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = [
        "tx_hash",
        "log_index",
        "network",
        "asset",
        "to_address",
        "derivation_path",
        "amount",
        "status",
        "confirmations",
        "seen_at",
    ]
    list_filter = ["network", "status", "asset__symbol"]
    search_fields = ["tx_hash", "to_address", "from_address"]
    list_select_related = ["network", "asset", "deposit_address"]
    readonly_fields = ["derivation_path"]

    @admin.display(description="derivation path")
    def derivation_path(self, transfer: Transfer) -> str:
        return transfer.deposit_address.derivation_path

    date_hierarchy = "seen_at"


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    fields = readonly_fields = ("account", "currency", "amount")
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "reference", "idempotency_key"]
    list_filter = ["kind"]
    search_fields = ["reference", "idempotency_key", "memo"]
    date_hierarchy = "created_at"
    inlines = [LedgerEntryInline]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return obj is not None and request.method == "GET"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["transaction", "account", "currency", "amount"]
    list_filter = ["currency", "account__kind"]
    search_fields = ["account__code", "transaction__reference"]
    list_select_related = ["transaction", "account"]


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "merchant", "name"]
    list_filter = ["kind"]
    search_fields = ["code", "name", "merchant__name"]


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ["account", "currency", "amount", "updated_at"]
    list_filter = ["currency", "account__kind"]
    search_fields = ["account__code"]
    list_select_related = ["account"]
