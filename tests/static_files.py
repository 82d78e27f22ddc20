"""WhiteNoise's middleware with its scan of the static files done once per test process.

Django's test client builds the middleware chain anew for every Client (so for every test that
signs someone in), and WhiteNoiseMiddleware.__init__ stats and indexes every file the static
finders list (WHITENOISE_USE_FINDERS is on under tests): about a fifth of a second each time on
this machine, more than many tests take. The files do not change during a run, so the index is
built once per set of settings that shape it and copied into each new instance; the rest is
WhiteNoise's own. tests/conftest.py puts this class in MIDDLEWARE in WhiteNoise's place.
"""

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware


class ScannedOnceWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    _indexes: dict[tuple, dict] = {}

    def add_files_from_finders(self) -> None:
        key = (
            self.static_prefix,
            self.max_age,
            self.allow_all_origins,
            self.charset,
            *(
                repr(getattr(settings, name, None))
                for name in (
                    "WHITENOISE_ADD_HEADERS_FUNCTION",
                    "WHITENOISE_IMMUTABLE_FILE_TEST",
                    "WHITENOISE_MIMETYPES",
                    "STATICFILES_DIRS",
                    "STATICFILES_FINDERS",
                )
            ),
        )
        index = self._indexes.get(key)
        if index is None:
            before = dict(self.files)
            super().add_files_from_finders()
            index = {url: f for url, f in self.files.items() if before.get(url) is not f}
            self._indexes[key] = index
        else:
            self.files.update(index)
