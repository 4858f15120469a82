"""Jobs: fill, replace and remove run in the background, answered by any entry replica.

A job is (route, request JSON, encoded upload bytes): serializable, never decoded arrays.
`JobStore` keeps them; `InProcessJobs` is the single-process default, `RedisJobs` (REDIS_URL
set) shares them between replicas on the streaq job queue. Each replica runs jobs by calling
the service's `Execute` coroutine. See docs/jobs.md.
"""
