"""Django's Redis cache with a clear() that empties one test worker's keys, not the database.

Under pytest-xdist (`make test`) the workers share the Redis database REDIS_URL names. Django's
RedisCache.clear() is FLUSHDB, so one worker clearing its cache at the start of a test would wipe
another's rate-limit counters and cached rates mid-test. tests/conftest.py gives each worker a
KEY_PREFIX of its own and this backend; everything but clear() is the app's own
(config/cache.py).
"""

from config.cache import RedisCache


class WorkerRedisCache(RedisCache):
    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        # Django's keys are "<KEY_PREFIX>:<version>:<key>" (make_key); the prefix is the worker's.
        keys = list(client.scan_iter(match=f"{self.key_prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return True
