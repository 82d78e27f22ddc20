"""Stablebill settings: one module, every deployment knob read from the environment.

Defaults run the whole app on one machine with nothing installed (SQLite, Celery's filesystem
broker under var/, emails written to var/mail). Production sets DATABASE_URL, CELERY_BROKER_URL,
SECRET_KEY, ALLOWED_HOSTS and an email provider; see README.md.
"""

import os
import re
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from kombu import Queue

from config.env import (
    database_from_url,
    env_bool,
    env_decimal,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("STABLEBILL_VAR_DIR", str(BASE_DIR / "var")))
# Local state (the SQLite file, the filesystem broker, mail files) lives here, so every
# manage.py command works in a fresh clone before `make run` ever ran.
try:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
except OSError as _error:
    raise ImproperlyConfigured(
        f"STABLEBILL_VAR_DIR={VAR_DIR} cannot be created: {_error.strerror}."
    ) from None

DEBUG = env_bool("DEBUG", False)
TESTING = "pytest" in sys.modules
SECRET_KEY = env_str("SECRET_KEY", "insecure-key-for-dev-and-tests" if DEBUG or TESTING else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The public base URL, used in emails and PDFs where no request is at hand.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    # Django admin with sign-in through allauth (throttled, two-factor); see merchants.admin_site.
    "merchants.admin_site.StablebillAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "ninja",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "merchants",
    "customers",
    "invoices",
    "checkout",
    "wallets",
]

MIDDLEWARE = [
    "merchants.middleware.QueryLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "merchants.middleware.NoStoreMiddleware",
    "merchants.middleware.ApiKeyAddressMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "merchants.context_processors.current_merchant",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'stablebill.sqlite3'}")
    )
}
# Persistent connections: a new PostgreSQL connection (a backend process forked, then
# Django's session setup) cost more than the whole of a small API request. A connection is
# kept for this many seconds of a worker's life (0: one per request), and checked before a
# request reuses it, so one the database dropped meanwhile is replaced instead of failing
# the request.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_CONN_HEALTH_CHECKS", True)
# The payer's page runs its one state query as a prepared statement of each PostgreSQL
# connection. A pooler in transaction mode (PgBouncer) hands a session's statements to
# other server connections, where it does not exist: switch it off there.
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
# Each web process listens (LISTEN/NOTIFY) for changes to what the payer's page shows, and
# reads a page's state again only when told (checkout/page_news.py). A pooler in transaction
# mode breaks LISTEN: switch it off there, or point the app at the server directly.
DATABASE_LISTEN = env_bool("DATABASE_LISTEN", True)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default, with a worker writing while the web process serves requests:
    # - WAL: readers never wait for the writer (and the writer never waits for readers);
    # - IMMEDIATE: a transaction takes the write lock when it begins, so the busy timeout
    #   applies to it; a DEFERRED one that reads, then writes, fails at once with "database
    #   is locked" when another connection wrote in between;
    # - the timeout: how long a write waits for another one before giving up.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_BUSY_TIMEOUT_SECONDS", 20, minimum=1),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "merchants.User"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "account_login"
AUTHENTICATION_BACKENDS = [
    # Sign-in, throttling, two-factor and passkeys all go through allauth; Django's backend
    # stays for `manage.py` tools and password checks.
    "allauth.account.auth_backends.AuthenticationBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Sign-in (django-allauth). People sign in with their email address and a password, then a
# second factor when they set one up (TOTP with recovery codes, or a passkey).
ACCOUNT_ADAPTER = "merchants.auth.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*"]
ACCOUNT_SIGNUP_FORM_CLASS = "merchants.forms.SignupExtraForm"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_PREVENT_ENUMERATION = True
# A reset asked for an unknown address sends nothing (the page says the same either way).
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
# "mandatory": a new account signs in only after clicking the emailed link, so nobody can open
# a business under someone else's address; "optional" lets them in at once.
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
if ACCOUNT_EMAIL_VERIFICATION not in ("mandatory", "optional"):
    raise ImproperlyConfigured("ACCOUNT_EMAIL_VERIFICATION must be mandatory or optional.")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "Stablebill: "
ACCOUNT_EMAIL_NOTIFICATIONS = True
# Re-authentication asks for the password or a second factor, never an emailed code: a
# session thief who also reads the mailbox must not pass it.
ACCOUNT_REAUTHENTICATION_METHODS = ("password", "mfa")
# How long a sign-in or re-authentication counts as recent for changes that move money.
ACCOUNT_REAUTHENTICATION_TIMEOUT = env_int("REAUTHENTICATION_MINUTES", 5, minimum=1) * 60
# Throttling, counted in the cache (Redis in production, so every web process shares it).
# Failed sign-ins: per client address and per account; the account's cool-down ends after
# SIGNIN_COOLDOWN_MINUTES, at once on a password reset, or when an admin unlocks it.
SIGNIN_FAILURES_PER_ACCOUNT = env_int("SIGNIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
SIGNIN_COOLDOWN_MINUTES = env_int("SIGNIN_COOLDOWN_MINUTES", 15, minimum=1)
SIGNIN_FAILURES_PER_ADDRESS_PER_MINUTE = env_int(
    "SIGNIN_FAILURES_PER_ADDRESS_PER_MINUTE", 10, minimum=1
)
ACCOUNT_RATE_LIMITS = {
    "login_failed": (
        f"{SIGNIN_FAILURES_PER_ADDRESS_PER_MINUTE}/m/ip,"
        f"{SIGNIN_FAILURES_PER_ACCOUNT}/{SIGNIN_COOLDOWN_MINUTES * 60}s/key"
    ),
    "login": "30/m/ip",
    "signup": "20/m/ip",
    # Reset and verification emails: per client address and per email address.
    "reset_password": "20/m/ip,3/h/key",
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reauthenticate": "10/m/user",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
}
MFA_ADAPTER = "allauth.mfa.adapter.DefaultMFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
# allauth's passkey forms, refusing a malformed answer with their error (merchants/passkeys.py).
MFA_FORMS = {
    name: f"merchants.passkeys.{form}"
    for name, form in {
        "login_webauthn": "LoginWebAuthnForm",
        "authenticate_webauthn": "AuthenticateWebAuthnForm",
        "reauthenticate_webauthn": "ReauthenticateWebAuthnForm",
        "add_webauthn": "AddWebAuthnForm",
        "signup_webauthn": "SignupWebAuthnForm",
    }.items()
}
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Stablebill")
MFA_RECOVERY_CODE_COUNT = 10
# Passkeys need HTTPS; browsers make an exception for http://localhost, which `make run`
# (DEBUG) uses. Tests check origins for real (https://testserver).
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = env_bool("MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN", DEBUG)
# Staff accounts (Django admin) must have a second factor before admin opens.
ADMIN_REQUIRE_TWO_FACTOR = env_bool("ADMIN_REQUIRE_TWO_FACTOR", not (DEBUG or TESTING))
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves collected files; development and tests serve them from the sources.
# The image collects them at build time into STATIC_ROOT, outside the var/ volume.
STATIC_ROOT = (
    None if DEBUG or TESTING else Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
)
WHITENOISE_USE_FINDERS = DEBUG or TESTING
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # The manifest storage needs `collectstatic`; development and tests serve sources.
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security headers. The CSP allows our own files and nonce-tagged inline blocks only.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS is sent on HTTPS requests only (SecurityMiddleware checks request.is_secure()); behind
# TLS it defaults to a year so a browser never again tries the site over plain HTTP.
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS",
    365 * 24 * 3600 if BEHIND_TLS_PROXY or SECURE_SSL_REDIRECT else 0,
    minimum=0,
)
# Links in sign-in emails (verification, reset) use the scheme the site is served with.
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if BEHIND_TLS_PROXY or SECURE_SSL_REDIRECT else "http"
# Behind a proxy, the client address is the one the proxy saw (X-Forwarded-For).
ALLAUTH_TRUSTED_PROXY_COUNT = env_int(
    "TRUSTED_PROXY_COUNT", 1 if BEHIND_TLS_PROXY else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# A sign-in lasts this long, then asks again (Django's default of two weeks is long for a
# dashboard that can change where money goes).
SESSION_COOKIE_AGE = env_int("SESSION_LIFETIME_HOURS", 12, minimum=1) * 3600
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# Email: Django's email API everywhere; the mailer backend decides where it goes. MAILER_BACKEND
# may name any anymail backend (e.g. anymail.backends.postmark.EmailBackend) with its ANYMAIL_*
# keys; the default writes each message as a file under var/mail.
_mailer_backend = env_str("MAILER_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
MAILERS = {
    "default": {
        "BACKEND": _mailer_backend,
        "OPTIONS": (
            {"file_path": str(VAR_DIR / "mail")}
            if _mailer_backend.endswith("filebased.EmailBackend")
            else {}
        ),
    }
}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Stablebill <billing@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_")
}

# Celery. The default broker needs no server: messages are files under var/celery.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # A test run gets folders of its own, so it never consumes what a dev worker left queued.
    _celery_dir = (
        Path(tempfile.gettempdir()) / f"stablebill-test-celery-{os.getpid()}"
        if TESTING
        else VAR_DIR / "celery"
    )
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (_celery_dir / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celery" / "beat-schedule")
CELERY_TIMEZONE = TIME_ZONE
# Separate queues, so a slow node cannot starve callbacks or emails. A worker started without
# -Q consumes all four; production may run one worker per queue.
CELERY_TASK_QUEUES = [Queue(name) for name in ("celery", "chain", "callbacks", "email")]
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "checkout.tasks.watch_networks": {"queue": "chain"},
    "checkout.tasks.watch_network": {"queue": "chain"},
    "invoices.tasks.callback_deliver": {"queue": "callbacks"},
    "invoices.tasks.callbacks_sweep": {"queue": "callbacks"},
    "invoices.tasks.email_send": {"queue": "email"},
    "invoices.tasks.send_reminders": {"queue": "email"},
    "merchants.tasks.send_invitation": {"queue": "email"},
    "merchants.tasks.send_webhook_disabled": {"queue": "email"},
}

CACHES = {
    "default": (
        {"BACKEND": "config.cache.RedisCache", "LOCATION": env_str("REDIS_URL")}
        if env_str("REDIS_URL", "")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Billing rules.
# The timer of the timed pricing modes, in minutes.
INVOICE_TIMER_MINUTES = env_int("INVOICE_TIMER_MINUTES", 15, minimum=1)
# Commission of a payment-service operator, in percent; 0 for a merchant hosting for themselves.
FEE_PERCENT: Decimal = env_decimal("FEE_PERCENT", "0")
if not Decimal("0") <= FEE_PERCENT < Decimal("100"):
    raise ImproperlyConfigured("FEE_PERCENT must be between 0 and 100.")

# Delivery: invoice PDFs and emails.
# A render running longer than this is stopped: no real invoice takes that long.
PDF_RENDER_TIMEOUT_SECONDS = env_int("PDF_RENDER_TIMEOUT_SECONDS", 20, minimum=1)
# Rendered PDFs are kept in the cache under a hash of their content, so a change renders anew.
PDF_CACHE_SECONDS = env_int("PDF_CACHE_SECONDS", 7 * 24 * 3600, minimum=60)
# The reminder before the due date goes out this many days ahead; the overdue one the day after.
REMINDER_DAYS_BEFORE_DUE = env_int("REMINDER_DAYS_BEFORE_DUE", 3, minimum=1)

# Chains. Networks and assets are rows (seeded by a migration, editable in admin); the
# environment overrides each network's operational knobs by its slug, e.g.
# CHAIN_ETHEREUM_RPC_URL, CHAIN_ETHEREUM_CONFIRMATIONS, CHAIN_BASE_POLL_SECONDS,
# CHAIN_ARBITRUM_EXPLORER_TX_URL (with {tx} where the hash goes), CHAIN_POLYGON_MAX_BLOCK_RANGE.
# Claims: CHAIN_<SLUG>_RELAYER_KEY is a gas-only key (it can pay the gas of factory claims,
# whose destination is fixed; it never holds or moves merchant money) and
# CHAIN_<SLUG>_AUTO_CLAIM_USD the uncollected value per account at which it claims by itself.
_CHAIN_KNOBS = (
    "RPC_URL|CONFIRMATIONS|POLL_SECONDS|EXPLORER_TX_URL|MAX_BLOCK_RANGE|MULTICALL_ADDRESS"
    "|RELAYER_KEY|AUTO_CLAIM_USD"
)
_CHAIN_KEY = re.compile(rf"^CHAIN_([A-Z0-9_]+?)_({_CHAIN_KNOBS})$")
CHAIN_OVERRIDES: dict[str, dict[str, str | int]] = {}
for _key in sorted(os.environ):
    if _match := _CHAIN_KEY.match(_key):
        _slug, _knob = _match.group(1).lower().replace("_", "-"), _match.group(2).lower()
        _is_text = _knob in ("rpc_url", "explorer_tx_url", "multicall_address", "relayer_key")
        CHAIN_OVERRIDES.setdefault(_slug, {})[_knob] = (
            env_str(_key) if _is_text else env_int(_key, 0, minimum=1)
        )
# A local dev chain (Network.is_dev, anvil) is watched only under DEBUG (and in the tests):
# its published keys would let anyone fake deposits.
CHAIN_DEV_NETWORKS_ALLOWED = DEBUG or TESTING
# Seconds the watcher waits for one node answer before it retries (with backoff). A fraction
# is allowed: a node next door (anvil in the chaos test) answers in milliseconds, and the lease
# below, whose floor this sets, is how long a killed worker's round stays blocked.
CHAIN_RPC_TIMEOUT_SECONDS = env_float("CHAIN_RPC_TIMEOUT_SECONDS", 10, minimum=0.1)
# A watch round holds its network's lease this long at most without renewing it; a killed
# worker's round is taken over after that.
CHAIN_ROUND_LEASE_SECONDS = env_int("CHAIN_ROUND_LEASE_SECONDS", 120, minimum=2)
# A round renews its lease before each node call (wallets.scanner.lease_kept); between two
# renewals lie at most a timed-out call, the longest retry pause (2 s) and one more call.
# A shorter lease would let a live round, waiting on a slow node, be taken over every time.
if CHAIN_ROUND_LEASE_SECONDS <= 2 * CHAIN_RPC_TIMEOUT_SECONDS + 2:
    raise ImproperlyConfigured(
        "CHAIN_ROUND_LEASE_SECONDS must be longer than 2 x CHAIN_RPC_TIMEOUT_SECONDS + 2 "
        f"(it is {CHAIN_ROUND_LEASE_SECONDS}, the timeout {CHAIN_RPC_TIMEOUT_SECONDS})."
    )
# ETH sent by contracts is found by tracing at most this many blocks per reconciliation;
# beyond that (or on nodes without debug_traceBlockByNumber) it is recorded without its hash.
CHAIN_TRACE_MAX_BLOCKS = env_int("CHAIN_TRACE_MAX_BLOCKS", 200, minimum=1)

# Checkout.
# Where exchange rates come from: "static" (the table below, USD-pegged stablecoins at 1) or
# "http" (a public exchange ticker at RATE_HTTP_URL, cached, refused when stale).
RATE_PROVIDER = env_str("RATE_PROVIDER", "static")
RATE_HTTP_URL = env_str("RATE_HTTP_URL", "")
RATE_CACHE_SECONDS = env_int("RATE_CACHE_SECONDS", 30, minimum=1)
RATE_MAX_AGE_SECONDS = env_int("RATE_MAX_AGE_SECONDS", 120, minimum=1)
# Price of one unit of the first currency in the second; anything else goes through USD.
STATIC_RATES = {
    ("USDT", "USD"): env_decimal("RATE_USDT_USD", "1"),
    ("USDC", "USD"): env_decimal("RATE_USDC_USD", "1"),
    ("ETH", "USD"): env_decimal("RATE_ETH_USD", "3000"),
    ("EUR", "USD"): env_decimal("RATE_EUR_USD", "1.08"),
    ("GBP", "USD"): env_decimal("RATE_GBP_USD", "1.27"),
    ("CHF", "USD"): env_decimal("RATE_CHF_USD", "1.13"),
}
# Prices are real outside DEBUG. Stablecoins listed in RATE_PEGGED are priced at their
# STATIC_RATES peg; any other code (ETH, EUR, GBP...) needs a live source (RATE_PROVIDER=http,
# quoting the codes in RATE_HTTP_CODES, fiat crosses included) or the operator's explicit
# approval of its static price in RATE_STATIC_APPROVED ("ETH,EUR" or "*" for the whole table).
# A code with neither is not offered: not as an invoice currency, not on the pay page.
RATE_PEGGED = env_list("RATE_PEGGED", ["USDT", "USDC"])
RATE_HTTP_CODES = env_list("RATE_HTTP_CODES", ["ETH", "EUR", "GBP"])
RATE_STATIC_APPROVED = env_list("RATE_STATIC_APPROVED", ["*"] if DEBUG else [])
# A quote in a volatile asset (not pegged) on an invoice without a timer is renewed after this
# long while nothing has arrived; money that arrived is valued at the quote it arrived under.
QUOTE_VOLATILE_MINUTES = env_int("QUOTE_VOLATILE_MINUTES", 15, minimum=1)
# A confirmed total within this many basis points of the amount due counts as exact.
PAYMENT_TOLERANCE_BPS = env_int("PAYMENT_TOLERANCE_BPS", 10, minimum=0)
# Payment attempts (new quotes) one invoice accepts per minute, against address farming.
PAYMENT_ATTEMPTS_PER_MINUTE = env_int("PAYMENT_ATTEMPTS_PER_MINUTE", 10, minimum=1)
# The payer's refund page (/refund/<token>/): requests per minute one refund's link, and one
# client address over all links, may make; more get a 429 page and change nothing.
REFUND_PAGE_REQUESTS_PER_TOKEN_PER_MINUTE = env_int(
    "REFUND_PAGE_REQUESTS_PER_TOKEN_PER_MINUTE", 20, minimum=1
)
REFUND_PAGE_REQUESTS_PER_ADDRESS_PER_MINUTE = env_int(
    "REFUND_PAGE_REQUESTS_PER_ADDRESS_PER_MINUTE", 60, minimum=1
)
# The payment page's status request waits this long for news before answering (push by long
# poll), in at most this many requests per web process at once; the rest answer at once and
# the page asks again in 3 s. Keep the slots below the threads of a process (GUNICORN_THREADS)
# so waiting pages never take every thread; sync workers never wait. 0 turns waiting off.
PAY_STATUS_HOLD_SECONDS = env_int("PAY_STATUS_HOLD_SECONDS", 10, minimum=0)
PAY_STATUS_HOLD_SLOTS = env_int("PAY_STATUS_HOLD_SLOTS", 8, minimum=0)
# Deposits unconfirmed this long fail their payment; later deposits still count, as Unresolved.
PROCESSING_TIMEOUT_HOURS = env_int("PROCESSING_TIMEOUT_HOURS", 24, minimum=1)
# Compliance screening asks each token contract's own freeze list about a deposit's sender
# (eth_call to the network's node). Off under tests, whose in-process chains have no node URL;
# the screening tests turn it on against anvil.
SCREENING_FREEZE_LISTS = env_bool("SCREENING_FREEZE_LISTS", not TESTING)

# Merchant API and callbacks.
# Requests one API key may make per minute; more get 429 with Retry-After.
API_RATE_PER_MINUTE = env_int("API_RATE_PER_MINUTE", 600, minimum=1)
# Callback URLs resolving to loopback, private, link-local, CGNAT or reserved addresses are
# refused (SSRF); development and tests deliver to receivers on this machine, so they allow them.
CALLBACKS_ALLOW_PRIVATE = env_bool("CALLBACKS_ALLOW_PRIVATE", DEBUG or TESTING)
# Seconds a receiver has to answer one callback.
CALLBACK_TIMEOUT_SECONDS = env_int("CALLBACK_TIMEOUT_SECONDS", 10, minimum=1)
# A callback task waiting on the broker this long is taken as lost and queued again; until
# then the sweep leaves it alone, so busy workers never find the queue full of duplicates.
CALLBACK_REQUEUE_SECONDS = env_int("CALLBACK_REQUEUE_SECONDS", 300, minimum=10)
# After a secret rotation the old secret keeps signing (beside the new one) this long.
WEBHOOK_ROTATION_GRACE_HOURS = env_int("WEBHOOK_ROTATION_GRACE_HOURS", 24, minimum=0)

# Operations: health checks, metrics, logs (config/health.py, config/metrics.py).
# /healthz, /readyz and /metrics are answered first, before host checks and the TLS redirect,
# and request latency is timed around everything else.
MIDDLEWARE.insert(0, "config.health.HealthCheckMiddleware")
MIDDLEWARE.insert(1, "config.metrics.RequestMetricsMiddleware")
# /readyz turns red when a network's scanner is further behind its node's head than this.
READYZ_MAX_SCANNER_LAG_BLOCKS = env_int("READYZ_MAX_SCANNER_LAG_BLOCKS", 50, minimum=1)
# How long /readyz, /metrics and doctor wait for a node or the broker before calling it down.
READYZ_TIMEOUT_SECONDS = env_int("READYZ_TIMEOUT_SECONDS", 3, minimum=1)
# Bearer token Prometheus sends to /metrics; without one, /metrics is off (404).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Logs go to stderr, one line per record: "plain" text, or "json" for a log collector.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
