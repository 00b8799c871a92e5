#pragma once
// List calls across backends (pipeline::fan_out_lists decided that the request is one): every
// backend of the plan is asked for its list in parallel, page by page (pipeline::wants_more
// says which backends' next pages still matter), each exchange bounded by that backend's
// timeouts, over the worker's pooled upstream connections with the backend's own credential.
// The caller's own objects are merged into one answer (pipeline::merge_lists). A backend that
// fails (connect error, timeout, non-2xx answer, unparsable body) is left out and named in
// `x-tollgate-partial`; when none answers, the first backend's error answer is relayed, or a
// 502/504 when none answered at all. See docs/design/routing.md ("Lists across backends").

#include "proxy/forwarder.hpp"
#include "proxy/net.hpp"
#include "server/pipeline/exchange.hpp"

namespace tollgate::server {

class Worker;

/// Answers the list call `x` (x.list is set; x.only, when a pin set it, narrows the backends
/// asked to that one). Fills the request context for finish(): status, outcome, one attempt
/// log per page asked. Thread: `w`'s. Returns whether to keep the connection.
template <class Stream>
proxy::net::awaitable<bool> answer_list(Worker& w, proxy::Client<Stream> client,
                                        const proxy::Request& req, pipeline::Exchange& x,
                                        bool keep_alive);

}  // namespace tollgate::server
