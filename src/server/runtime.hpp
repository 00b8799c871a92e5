#pragma once
// The runtime views the server builds and publishes (defined in the pipeline module, which the
// stages and the forwarder read), under the server's own names.

#include "server/pipeline/snapshot.hpp"

namespace tollgate::server {

using pipeline::AuthState;
using pipeline::BackendRuntime;
using pipeline::DeploymentRuntime;
using pipeline::kNoSeries;
using pipeline::Snapshot;
using pipeline::TokenSlot;

}  // namespace tollgate::server
