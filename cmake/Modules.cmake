# The gateway's modules and what each may use: the one table from which the libraries are linked
# (src/CMakeLists.txt) and the include graph is checked (CheckModuleGraph.cmake, at configure
# time and as the test `module_graph`). A module includes headers of itself and of the modules
# listed here only; the list is acyclic (lower layers first).
#
#   crypto     SHA-256, constant-time comparison, base64url, RFC 3339 (OpenSSL)
#   config     Config structs and the loader (the only yaml-cpp user)
#   core       clock, errors, JSON log fields, request ids, usage scanners, API classification
#   tokenize   the exact BPE tokenizer
#   routing    capacity model, balancer, breaker, affinity table, waiting rooms, leases
#   auth       keys, JWT/JWKS, authenticate()
#   ratelimit  buckets, budgets, prices, the admission estimate
#   metrics    per-worker cells, the metric tables, rendering (the only prometheus-cpp user), logs
#   usage      the usage ledger (the only SQLite user), its report, the affinity table's journal,
#              the fleet ledger's shipper (the only libpq user)
#   cluster    the Redis client and subscriber on Asio (hiredis as the RESP codec only)
#   pipeline   the request context, snapshots, and the request stages, filters and finish
#   proxy      upstream connections, TLS, the forwarder and the relay (Beast)
#   server     listeners, sessions, workers, the gateway, admin, health, identities (Beast)
#   mock       the mock Azure OpenAI backend (Beast)
set(TOLLGATE_MODULES crypto config core tokenize routing auth ratelimit metrics usage cluster
    pipeline proxy server mock)
set(TOLLGATE_DEPS_crypto "")
set(TOLLGATE_DEPS_config crypto)
set(TOLLGATE_DEPS_core config crypto)
set(TOLLGATE_DEPS_tokenize "")
set(TOLLGATE_DEPS_routing core)
set(TOLLGATE_DEPS_auth core config crypto)
set(TOLLGATE_DEPS_ratelimit core config tokenize)
set(TOLLGATE_DEPS_metrics ratelimit core config)  # typed cells use the limits' scopes and units
set(TOLLGATE_DEPS_usage metrics ratelimit routing core config crypto)  # routing: AffinityJournal
set(TOLLGATE_DEPS_cluster auth metrics ratelimit routing core config)
set(TOLLGATE_DEPS_pipeline cluster auth ratelimit routing metrics usage tokenize core config crypto)
set(TOLLGATE_DEPS_proxy pipeline metrics routing core config)
set(TOLLGATE_DEPS_server proxy pipeline cluster auth ratelimit routing metrics usage tokenize core config
    crypto)
set(TOLLGATE_DEPS_mock "")
