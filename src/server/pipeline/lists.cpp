// List calls across backends: the stage that recognises them (fan_out_lists) and the plain part
// of answering them — reading a backend's page, deciding whether its next page matters, and
// merging what every backend listed into the one list the client gets. The session's
// server/object_lists.cpp does the I/O. See docs/design/routing.md ("Lists across backends").

#include <algorithm>
#include <boost/url/encode.hpp>
#include <boost/url/pct_string_view.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <charconv>
#include <nlohmann/json.hpp>

#include "server/pipeline/stages.hpp"
#include "tollgate/core/errors.hpp"

namespace tollgate::pipeline {

namespace {

/// A collection whose GET is a list call, and its page size bounds as OpenAI sets them.
struct Collection {
  std::string_view path;
  std::size_t default_limit;
  std::size_t max_limit;
};

// Files list all at once by default (up to 10,000); the other collections 20 (up to 100).
constexpr std::array kListed = {
    Collection{"files", 10'000, 10'000},     Collection{"batches", 20, 100},
    Collection{"vector_stores", 20, 100},    Collection{"assistants", 20, 100},
    Collection{"fine_tuning/jobs", 20, 100},
};

const Collection* listed_collection(std::string_view method, const core::ApiCall& call) {
  if (method != "GET" || !call.stateful || call.surface == core::Surface::kDeployment)
    return nullptr;
  for (const auto& c : kListed) {
    if (call.op_path == c.path) return &c;
  }
  return nullptr;
}

Reply bad_list_query(std::string message, std::string param) {
  return Reply::error("bad_list_query", core::bad_request(std::move(message), std::move(param)));
}

std::optional<std::size_t> parse_limit(std::string_view v, std::size_t max) {
  std::size_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec == std::errc::result_out_of_range && p == v.data() + v.size()) return max;
  if (ec != std::errc{} || p != v.data() + v.size() || n == 0) return std::nullopt;
  return std::min(n, max);
}

/// Reads one of the parameters the merge answers (limit, order, after, before) into `plan`;
/// `consumed` is false for any other one (it goes to the backends).
StageResult read_param(ListPlan& plan, const Collection& c, std::string_view key,
                       std::string_view raw, bool& consumed) {
  consumed = key == "limit" || key == "order" || key == "after" || key == "before";
  if (!consumed) return std::nullopt;
  auto encoded = boost::urls::make_pct_string_view(raw);
  if (!encoded)
    return bad_list_query("malformed query parameter '" + std::string(key) + "'", std::string(key));
  auto value = encoded->decode();
  if (key == "before") {
    return bad_list_query("'before' is not supported for lists across backends: page with 'after'",
                          "before");
  }
  if (key == "after") {
    plan.query.after = std::move(value);
  } else if (key == "order") {
    if (value != "asc" && value != "desc")
      return bad_list_query("order must be 'asc' or 'desc'", "order");
    plan.query.ascending = value == "asc";
  } else if (auto limit = parse_limit(value, c.max_limit)) {
    plan.query.limit = *limit;
  } else {
    return bad_list_query("limit must be an integer from 1 to " + std::to_string(c.max_limit),
                          "limit");
  }
  return std::nullopt;
}

/// True when `a` comes before `b` in the list's order: newest first by created_at, ties by id
/// (ascending: the exact reverse).
bool comes_first(const ListItem& a, const ListItem& b, bool ascending) {
  if (a.created_at != b.created_at) {
    return ascending ? a.created_at < b.created_at : a.created_at > b.created_at;
  }
  return ascending ? a.id < b.id : a.id > b.id;
}

const ListItem* find_kept(std::span<const BackendList> lists, std::string_view id) {
  for (const auto& l : lists) {
    for (const auto& item : l.kept) {
      if (item.id == id) return &item;
    }
  }
  return nullptr;
}

std::string render_list(std::span<const ListItem* const> page, bool has_more) {
  std::string body = R"({"object":"list","data":[)";
  for (std::size_t i = 0; i < page.size(); ++i) {
    if (i > 0) body += ',';
    body += page[i]->json;
  }
  body += R"(],"first_id":)";
  body += page.empty() ? "null" : core::json_quote(page.front()->id);
  body += R"(,"last_id":)";
  body += page.empty() ? "null" : core::json_quote(page.back()->id);
  body += R"(,"has_more":)";
  body += has_more ? "true" : "false";
  body += '}';
  return body;
}

}  // namespace

StageResult fan_out_lists(Exchange& x) {
  const auto* collection = listed_collection(x.req.method, x.ctx.call);
  if (collection == nullptr) return std::nullopt;
  ListPlan plan;
  plan.query.limit = collection->default_limit;
  std::string_view rest = x.ctx.call.query;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    bool consumed = false;
    if (auto bad = read_param(plan, *collection, pair.substr(0, eq), value, consumed)) return bad;
    if (consumed) continue;
    if (!plan.upstream_query.empty()) plan.upstream_query += '&';
    plan.upstream_query += pair;
  }
  for (const auto& tier : x.route->route.tiers) {
    for (const auto& m : tier) {
      auto& asked = plan.backends;
      if (x.allowed.allows(m.backend) &&
          std::find(asked.begin(), asked.end(), m.backend) == asked.end()) {
        asked.push_back(m.backend);
      }
    }
  }
  x.list = std::move(plan);
  return std::nullopt;
}

std::optional<ListPage> parse_list_page(std::string_view body) {
  auto j = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto data = j.find("data");
  if (data == j.end() || !data->is_array()) return std::nullopt;
  ListPage page;
  auto more = j.find("has_more");
  page.has_more = more != j.end() && more->is_boolean() && more->get<bool>();
  page.items.reserve(data->size());
  for (const auto& item : *data) {
    if (!item.is_object()) return std::nullopt;
    auto id = item.find("id");
    auto created = item.find("created_at");
    if (id == item.end() || !id->is_string() || created == item.end() ||
        !created->is_number_integer()) {
      return std::nullopt;
    }
    page.items.push_back(
        ListItem{id->get<std::string>(), created->get<std::int64_t>(),
                 item.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)});
  }
  return page;
}

void absorb(BackendList& list, ListPage page, const KeepObject& keep) {
  ++list.pages;
  list.more = page.has_more && !page.items.empty();
  if (!page.items.empty()) {
    list.cursor = page.items.back().id;
    list.last_created = page.items.back().created_at;
  }
  for (auto& item : page.items) {
    if (keep(item.id)) list.kept.push_back(std::move(item));
  }
}

bool wants_more(std::span<const BackendList> lists, std::size_t b, const ListQuery& q) {
  const auto& list = lists[b];
  if (!list.more || list.pages >= kMaxListPages) return false;
  if (list.pages == 0) return true;
  const ListItem* cursor = nullptr;
  if (!q.after.empty()) {
    cursor = find_kept(lists, q.after);
    if (cursor == nullptr) return true;  // its place is still unknown: it may be further on
  }
  // A later page of this backend holds nothing that sorts before an object listed with a
  // created_at strictly ahead of its last one (objects of that same second may come in any
  // order, so they do not count). limit + 1 such objects past the cursor fill the page and
  // settle has_more.
  auto settled = std::count_if(list.kept.begin(), list.kept.end(), [&](const ListItem& item) {
    bool ahead =
        q.ascending ? item.created_at < list.last_created : item.created_at > list.last_created;
    return ahead && (cursor == nullptr || comes_first(*cursor, item, q.ascending));
  });
  return static_cast<std::size_t>(settled) <= q.limit;
}

std::string page_query(const ListPlan& plan, const BackendList& list) {
  std::string query = plan.upstream_query;
  auto add = [&query](std::string_view key, std::string_view value) {
    if (!query.empty()) query += '&';
    query += key;
    query += '=';
    query += value;
  };
  add("limit", std::to_string(kListPageSize));
  add("order", plan.query.ascending ? "asc" : "desc");
  if (list.pages > 0 && !list.cursor.empty()) {
    add("after", boost::urls::encode(list.cursor, boost::urls::unreserved_chars));
  }
  return query;
}

std::string merge_lists(std::span<const BackendList> lists, const ListQuery& q) {
  std::vector<const ListItem*> all;
  bool cut = false;
  for (const auto& l : lists) {
    cut = cut || l.more;
    for (const auto& item : l.kept) all.push_back(&item);
  }
  std::sort(all.begin(), all.end(), [&q](const ListItem* a, const ListItem* b) {
    return comes_first(*a, *b, q.ascending);
  });
  std::size_t start = 0;
  if (!q.after.empty()) {
    auto it =
        std::find_if(all.begin(), all.end(), [&q](const ListItem* i) { return i->id == q.after; });
    if (it == all.end()) return render_list({}, false);
    start = static_cast<std::size_t>(it - all.begin()) + 1;
  }
  auto end = std::min(all.size(), start + q.limit);
  std::span<const ListItem* const> page(all.data() + start, end - start);
  bool has_more = end < all.size() || (cut && !page.empty());
  return render_list(page, has_more);
}

}  // namespace tollgate::pipeline
