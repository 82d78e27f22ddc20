"""The demo business `make run` signs in to (manage.py seed_demo)."""

import pytest
from django.core.management import CommandError, call_command

from invoices.models import Invoice
from merchants.models import Merchant, User

DEMO = "demo@stablebill.localhost"

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_seed_demo_makes_the_business_once_and_prints_its_login(settings, var_dir, capsys):
    settings.RATE_STATIC_APPROVED = ["*"]
    call_command("seed_demo")
    password = (var_dir / "demo-login.txt").read_text().strip()
    assert f"Sign in as {DEMO} with password {password}" in capsys.readouterr().out
    assert User.objects.get(email=DEMO).check_password(password)
    invoices = Invoice.objects.count()
    assert invoices > 0
    call_command("seed_demo")  # a second start keeps what is there
    assert (Merchant.objects.count(), Invoice.objects.count()) == (1, invoices)
    assert (var_dir / "demo-login.txt").read_text().strip() == password


def test_without_an_approved_price_seed_demo_says_what_to_set_and_makes_nothing(settings, var_dir):
    settings.RATE_STATIC_APPROVED = []  # as outside DEBUG, with no live rate source
    settings.RATE_PROVIDER = "static"
    with pytest.raises(CommandError, match="RATE_STATIC_APPROVED='\\*'"):
        call_command("seed_demo")
    assert not User.objects.filter(email=DEMO).exists()
    assert not Merchant.objects.exists()
    assert not (var_dir / "demo-login.txt").exists()
