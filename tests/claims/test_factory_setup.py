"""The factory's deployment: from admin (the browser wallet sends it; the server checks what
it was given) and by the dev setup on anvil."""

import json

import pytest
from django.core.management import call_command
from django.test import Client

from contracts.deploy import DEPLOYER_ADDRESS, deploy_demo_tokens, deploy_deposit_factory
from tests.chain import running_anvil
from tests.evm import seed_networks
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from wallets.chain import Chain
from wallets.models import Network, Wallet, WalletMode

pytestmark = pytest.mark.django_db


@pytest.fixture
def rpc_url():
    with running_anvil() as url:
        yield url


def test_admin_saves_a_deployed_factory_after_checking_it_on_the_node(rpc_url):
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.rpc_url = rpc_url
    network.save()
    root = UserFactory(email="root@stablebill.test", is_staff=True, is_superuser=True)
    client = Client()
    assert client.login(email=root.email, password=PASSWORD)
    url = f"/admin/wallets/network/{network.pk}/deploy-factory/"
    page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Deploy with my browser wallet" in text and "js/deploy_factory.js" in text
    # Not a contract, a token that is not a factory, garbage: refused, nothing saved.
    tokens = deploy_demo_tokens(rpc_url)
    for address, message in (
        (DEPLOYER_ADDRESS, "no contract"),
        (tokens["USDC"], "not a DepositFactory"),
        ("0x1234", "40 hex digits"),
    ):
        response = client.post(url, {"address": address})
        assert response.status_code == 400
        assert message in response.content.decode()
    network.refresh_from_db()
    assert network.deposit_factory == ""
    factory = deploy_deposit_factory(rpc_url)
    response = client.post(url, {"address": factory})
    assert response.status_code == 302
    network.refresh_from_db()
    assert network.deposit_factory == factory.lower()
    change = client.get(f"/admin/wallets/network/{network.pk}/change/").content.decode()
    assert factory.lower() in change


def test_devchain_setup_deploys_the_factory_and_gives_the_demo_merchant_forwarders(
    rpc_url, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    seed_networks()
    user = UserFactory(email="demo@stablebill.test")
    membership = MembershipFactory(user=user, role="owner")
    call_command("devchain_setup", rpc_url=rpc_url, merchant_of=user.email)
    network = Network.objects.get(slug="anvil")
    chain = Chain(rpc_url)
    assert network.deposit_factory and chain.has_code(network.deposit_factory)
    wallet = Wallet.objects.get(merchant=membership.merchant)
    assert (wallet.mode, wallet.is_demo) == (WalletMode.FORWARDER, True)
    assert chain.w3.eth.get_balance(chain.w3.to_checksum_address(wallet.account_address)) > 0
    assert "Account address" in (tmp_path / "demo-wallet.txt").read_text()
    # A second run (make run again, same chain) keeps the same factory.
    call_command("devchain_setup", rpc_url=rpc_url, merchant_of=user.email)
    network.refresh_from_db()
    assert (
        network.deposit_factory
        == json.loads((tmp_path / "demo-chain.json").read_text())["deposit_factory"].lower()
    )
