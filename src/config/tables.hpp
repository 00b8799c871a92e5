#pragma once
// The schema tables of the config file (tables.cpp). Private to src/config.

#include "config/schema.hpp"

namespace tollgate::config::schema {

/// Reads the document `root` (a mapping) into ctx.config(), collecting every error in ctx.
void parse_config(const Node& root, Ctx& ctx);

}  // namespace tollgate::config::schema
