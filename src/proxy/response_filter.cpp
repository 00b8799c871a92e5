#include "proxy/response_filter.hpp"

#include "tollgate/core/objects.hpp"

namespace tollgate::proxy {

void UsageObserver::on_end(BodyEnd) {
  sink_ = sse_ ? stream_.usage() : json_.usage();
}

void OutputTextCapture::on_head(const ResponseHead& head) {
  if (sink_ == nullptr || !head.is_sse) return;
  sink_->clear();  // an earlier attempt's text was not relayed
  parse_.capture_output(sink_);
}

void CreatedIdCapture::on_head(const ResponseHead& head) {
  active_ = wanted_ && head.status / 100 == 2;
  sse_ = head.is_sse;
}

void CreatedIdCapture::take(std::string_view bytes) {
  if (sse_) {
    events_.feed(bytes, [this](std::string_view data) {
      if (!sink_.empty()) return;
      sink_ = core::answer_ids(data);
      if (!sink_.empty()) found();
    });
    active_ = sink_.empty();
  } else if (body_.size() + bytes.size() <= kMaxBody) {
    body_.append(bytes);
  } else {
    active_ = false;
    body_.clear();
  }
}

void CreatedIdCapture::read_json() {
  active_ = false;  // read once
  if (body_.empty()) return;
  sink_ = core::answer_ids(body_);  // a body cut short does not parse: no id
  body_.clear();
  if (!sink_.empty()) found();
}

void CreatedIdCapture::found() {
  if (notify_ != nullptr && *notify_) (*notify_)(sink_);
}

void CreatedIdCapture::on_end(BodyEnd end) {
  // A JSON body is read for its id only when complete (a cut one may not parse, or lie); the
  // last chunk normally read it already.
  if (active_ && !sse_ && end == BodyEnd::kComplete) read_json();
}

void UsageStripFilter::on_chunk(BodyChunk& chunk) {
  if (!active_) return;
  out_ = stripper_.feed(chunk.bytes);
  if (chunk.last) out_ += stripper_.finish();
  chunk.bytes = out_;
}

}  // namespace tollgate::proxy
