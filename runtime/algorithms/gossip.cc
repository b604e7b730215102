#include "runtime/algorithms/gossip.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "datasets/rng.h"
#include "kernels/context.h"

namespace adasync {

// ------------------------------------------------------------------ graphs
GossipGraph GossipGraph::make(GraphKind kind, int P, int degree, uint64_t seed) {
  EXPECTS(P >= 2, "a gossip graph of " << P << " nodes");
  GossipGraph g;
  g.adj_.assign(size_t(P), {});
  auto link = [&](int a, int b) {
    g.adj_[size_t(a)].push_back(b);
    g.adj_[size_t(b)].push_back(a);
  };
  if (kind == GraphKind::Complete) {
    for (int a = 0; a < P; ++a)
      for (int b = a + 1; b < P; ++b) link(a, b);
    g.desc_ = "complete graph";
  } else if (kind == GraphKind::Ring) {
    for (int a = 0; a < P; ++a)
      if (P > 2 || a == 0) link(a, (a + 1) % P);
    g.desc_ = "ring";
  } else if (kind == GraphKind::Torus) {
    const int rows = torus_rows(P);
    EXPECTS(rows > 0, "a torus needs P = rows x cols with both >= 2, P = " << P);
    const int cols = P / rows;
    std::set<std::pair<int, int>> edges;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const int a = r * cols + c;
        for (int b : {r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c})
          if (a != b) edges.insert({std::min(a, b), std::max(a, b)});
      }
    for (auto [a, b] : edges) link(a, b);
    g.desc_ = std::to_string(rows) + "x" + std::to_string(cols) + " torus";
  } else {  // regular
    EXPECTS(degree >= 1 && degree < P && (P * degree) % 2 == 0,
            "a random r-regular graph on P nodes needs 1 <= r < P and P r even: r = " << degree << ", P = " << P);
    // Pairing model: shuffle P * r stubs and pair them; retry until simple and connected.
    Rng rng(seed, 0x67a9);
    for (int attempt = 0; attempt < 10000; ++attempt) {
      std::vector<int> stubs;
      for (int a = 0; a < P; ++a)
        for (int k = 0; k < degree; ++k) stubs.push_back(a);
      for (size_t i = stubs.size() - 1; i > 0; --i) std::swap(stubs[i], stubs[rng.below(i + 1)]);
      std::set<std::pair<int, int>> edges;
      bool simple = true;
      for (size_t i = 0; i < stubs.size() && simple; i += 2) {
        const int a = std::min(stubs[i], stubs[i + 1]), b = std::max(stubs[i], stubs[i + 1]);
        simple = a != b && edges.insert({a, b}).second;
      }
      if (!simple) continue;
      GossipGraph h;
      h.adj_.assign(size_t(P), {});
      for (auto [a, b] : edges) h.adj_[size_t(a)].push_back(b), h.adj_[size_t(b)].push_back(a);
      if (!h.connected()) continue;
      g.adj_ = std::move(h.adj_);
      break;
    }
    if (g.adj_[0].empty())
      throw UsageError("no connected simple " + std::to_string(degree) + "-regular graph on " + std::to_string(P) +
                       " nodes in 10000 draws of the pairing model: try another degree");
    g.desc_ = "random " + std::to_string(degree) + "-regular graph";
  }
  for (auto& a : g.adj_) std::sort(a.begin(), a.end());
  return g;
}

bool GossipGraph::connected() const {
  std::vector<char> seen(adj_.size(), 0);
  std::vector<int> stack = {0};
  seen[0] = 1;
  size_t count = 1;
  while (!stack.empty()) {
    const int a = stack.back();
    stack.pop_back();
    for (int b : adj_[size_t(a)])
      if (!seen[size_t(b)]) seen[size_t(b)] = 1, ++count, stack.push_back(b);
  }
  return count == adj_.size();
}

// ------------------------------------------------------------------ quantizer
LatticeQuantizer::LatticeQuantizer(int bits, double step) : bits_(bits), e_(step) {
  EXPECTS(bits == 0 || bits == 8 || bits == 16, "0 (full precision), 8 or 16 bits, found " << bits);
  EXPECTS(bits == 0 || step > 0, "a positive lattice step, found " << step);
  q_ = bits == 0 ? 0 : (1u << bits);
}

size_t LatticeQuantizer::message_bytes(size_t n) const { return n * (bits_ == 0 ? sizeof(float) : size_t(bits_ / 8)); }

double LatticeQuantizer::safe_radius() const { return bits_ == 0 ? INFINITY : double(q_) * e_ / 2; }

void LatticeQuantizer::encode(const float* x, size_t n, unsigned char* msg) const {
  if (bits_ == 0) {
    std::memcpy(msg, x, n * sizeof(float));
    return;
  }
  const double inv = 1.0 / e_;
  const int64_t mask = int64_t(q_) - 1;
  if (bits_ == 8) {
    for (size_t i = 0; i < n; ++i) msg[i] = static_cast<unsigned char>(std::llround(double(x[i]) * inv) & mask);
  } else {
    auto* m16 = reinterpret_cast<uint16_t*>(msg);
    for (size_t i = 0; i < n; ++i) m16[i] = static_cast<uint16_t>(std::llround(double(x[i]) * inv) & mask);
  }
}

void LatticeQuantizer::decode(const unsigned char* msg, const float* b, size_t n, float* out) const {
  if (bits_ == 0) {
    std::memcpy(out, msg, n * sizeof(float));
    return;
  }
  const double qe = double(q_) * e_, inv_qe = 1.0 / qe;
  const auto* m16 = reinterpret_cast<const uint16_t*>(msg);
  for (size_t i = 0; i < n; ++i) {
    const double ec = e_ * double(bits_ == 8 ? msg[i] : m16[i]);
    out[i] = float(ec + qe * std::nearbyint((double(b[i]) - ec) * inv_qe));
  }
}

size_t count_out_of_range(const float* sent, const float* decoded, size_t n, double step) {
  // e/2 plus float rounding of the decoded value.
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double tol = step / 2 + 1e-6 * std::fabs(double(sent[i])) + 1e-12;
    bad += std::fabs(double(decoded[i]) - double(sent[i])) > tol;
  }
  return bad;
}

// ------------------------------------------------------------------ messages
namespace {
// 64-bit running check of lattice indices; each step is a bijection of the
// state, so one differing index always changes the 64-bit state.
inline uint64_t check_step(uint64_t h, int64_t k) {
  h = (h ^ uint64_t(k)) * 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 29);
}
inline uint32_t check_fold(uint64_t h) { return uint32_t(h ^ (h >> 32)); }
constexpr uint64_t kCheckSeed = 0x2545F4914F6CDD1Dull;
}  // namespace

SwarmCodec::SwarmCodec(int bits, double fixed_step, size_t block) : bits_(bits), fixed_(fixed_step), block_(block) {
  EXPECTS(bits == 0 || bits == 8 || bits == 16, "0 (full precision), 8 or 16 bits, found " << bits);
  EXPECTS(fixed_step >= 0, "a positive lattice step (0: adaptive), found " << fixed_step);
  EXPECTS(block >= 1, "quantisation blocks of at least 1 coordinate");
  q_ = bits == 0 ? 0 : (1u << bits);
}

size_t SwarmCodec::message_bytes(size_t n) const {
  if (bits_ == 0) return n * sizeof(float);
  return n * size_t(bits_ / 8) + blocks(n) * kHeaderBytes;
}

float SwarmCodec::step_for(double bound, double max_abs) const {
  const double e = std::max(2 * bound / (double(q_) - 4), std::max(max_abs * 0x1p-23, 1e-30));
  float f = float(e);
  if (double(f) < e) f = std::nextafter(f, INFINITY);
  return std::isfinite(f) ? f : 0.f;
}

float SwarmCodec::step(const unsigned char* msg, size_t k) const {
  float e;
  std::memcpy(&e, msg + k * (kHeaderBytes + block_ * size_t(bits_ / 8)), sizeof e);
  return e;
}

void SwarmCodec::encode(const float* x, size_t n, const float* bound, unsigned char* msg) const {
  if (bits_ == 0) {
    std::memcpy(msg, x, n * sizeof(float));
    return;
  }
  const int64_t mask = int64_t(q_) - 1;
  const size_t width = size_t(bits_ / 8);
  for (size_t k = 0, off = 0; off < n; ++k, off += block_) {
    const size_t len = std::min(block_, n - off);
    unsigned char* head = msg + k * (kHeaderBytes + block_ * width);
    unsigned char* codes = head + kHeaderBytes;
    double amax = 0;
    for (size_t i = 0; i < len; ++i) amax = std::max(amax, double(std::fabs(x[off + i])));
    float e = 0;
    if (std::isfinite(amax)) e = fixed_ > 0 ? float(fixed_) : step_for(bound[k], amax);
    // A fixed step too small for the values would overflow the indices.
    if (e > 0 && amax / double(e) > 0x1p52) e = 0;
    uint64_t h = kCheckSeed;
    if (e > 0) {
      const double inv = 1.0 / double(e);
      for (size_t i = 0; i < len; ++i) {
        const int64_t idx = std::llround(double(x[off + i]) * inv);
        h = check_step(h, idx);
        if (width == 1)
          codes[i] = static_cast<unsigned char>(idx & mask);
        else {
          const uint16_t c = static_cast<uint16_t>(idx & mask);
          std::memcpy(codes + 2 * i, &c, 2);
        }
      }
    } else {
      std::memset(codes, 0, len * width);
    }
    const uint32_t check = check_fold(h);
    std::memcpy(head, &e, 4);
    std::memcpy(head + 4, &check, 4);
  }
}

size_t SwarmCodec::decode(const unsigned char* msg, const float* b, size_t n, float* out, unsigned char* failed) const {
  if (bits_ == 0) {
    std::memcpy(out, msg, n * sizeof(float));
    return 0;
  }
  const size_t width = size_t(bits_ / 8);
  const double q = double(q_);
  size_t bad = 0;
  for (size_t k = 0, off = 0; off < n; ++k, off += block_) {
    const size_t len = std::min(block_, n - off);
    const unsigned char* head = msg + k * (kHeaderBytes + block_ * width);
    const unsigned char* codes = head + kHeaderBytes;
    float e;
    uint32_t check;
    std::memcpy(&e, head, 4);
    std::memcpy(&check, head + 4, 4);
    bool ok = e > 0 && std::isfinite(e);
    if (ok) {
      const double ed = double(e), inv = 1.0 / ed;
      uint64_t h = kCheckSeed;
      for (size_t i = 0; i < len && ok; ++i) {
        double c;
        if (width == 1) {
          c = double(codes[i]);
        } else {
          uint16_t c16;
          std::memcpy(&c16, codes + 2 * i, 2);
          c = double(c16);
        }
        const double idx = c + q * std::nearbyint((double(b[off + i]) * inv - c) / q);
        ok = std::fabs(idx) < 0x1p52;  // also false for a non-finite b
        const int64_t ii = ok ? int64_t(idx) : 0;
        h = check_step(h, ii);
        out[off + i] = float(ed * double(ii));
      }
      ok = ok && check_fold(h) == check;
    }
    failed[k] = ok ? 0 : 1;
    bad += !ok;
  }
  return bad;
}

size_t failed_values(const SwarmCodec& c, const unsigned char* failed, size_t n) {
  size_t v = 0;
  const size_t B = c.block();
  for (size_t k = 0, off = 0; off < n && c.blocks(n) > 0; ++k, off += B)
    if (failed[k]) v += std::min(B, n - off);
  return v;
}

void pack_failed(const SwarmCodec& c, const float* x, const unsigned char* failed, size_t n, float* packed) {
  const size_t B = c.block();
  for (size_t k = 0, off = 0; off < n && c.blocks(n) > 0; ++k, off += B)
    if (failed[k]) {
      const size_t len = std::min(B, n - off);
      std::memcpy(packed, x + off, len * sizeof(float));
      packed += len;
    }
}

void unpack_failed(const SwarmCodec& c, const float* packed, const unsigned char* failed, size_t n, float* out) {
  const size_t B = c.block();
  for (size_t k = 0, off = 0; off < n && c.blocks(n) > 0; ++k, off += B)
    if (failed[k]) {
      const size_t len = std::min(B, n - off);
      std::memcpy(out + off, packed, len * sizeof(float));
      packed += len;
    }
}

void receiver_bounds(const SwarmCodec& c, const unsigned char* msg, const unsigned char* failed, const float* out,
                     const float* b, size_t n, float* dist) {
  const size_t B = c.block();
  for (size_t k = 0, off = 0; off < n && c.blocks(n) > 0; ++k, off += B) {
    const size_t len = std::min(B, n - off);
    const double half = failed[k] ? 0 : double(c.step(msg, k)) / 2;  // a block sent again is exact
    double d = 0;
    for (size_t i = 0; i < len; ++i) d = std::max(d, std::fabs(double(out[off + i]) - double(b[off + i])));
    dist[k] = float(d + half);
  }
}

TransferCount count_transfer(const SwarmCodec& c, size_t n, const unsigned char* failed, size_t bad) {
  TransferCount t;
  t.sender_bytes = int64_t(c.message_bytes(n));
  t.blocks = int64_t(c.blocks(n));
  if (bad == 0) return t;
  const int64_t resent = int64_t(failed_values(c, failed, n) * sizeof(float));
  t.receiver_bytes = int64_t(c.nack_bytes(n));
  t.fallback_blocks = int64_t(bad);
  t.sender_bytes += resent;
  t.fallback_bytes = t.receiver_bytes + resent;
  return t;
}

TransferCount transfer(const SwarmCodec& c, const float* x, const float* b, size_t n, const float* bound, float* out,
                       float* dist, TransferScratch* s) {
  const size_t bytes = c.message_bytes(n);
  if (s->msg.size() < bytes) s->msg.resize(bytes);
  const size_t nb = c.blocks(n);
  if (s->failed.size() < nb) s->failed.resize(nb);
  c.encode(x, n, bound, s->msg.data());
  const size_t bad = c.decode(s->msg.data(), b, n, out, s->failed.data());
  TransferCount t = count_transfer(c, n, s->failed.data(), bad);
  const size_t B = c.block();
  for (size_t k = 0, off = 0; off < n && nb > 0; ++k, off += B) {
    const size_t len = std::min(B, n - off);
    if (s->failed[k])
      std::memcpy(out + off, x + off, len * sizeof(float));
    else
      t.out_of_range += int64_t(count_out_of_range(x + off, out + off, len, c.step(s->msg.data(), k)));
  }
  if (dist && nb > 0) receiver_bounds(c, s->msg.data(), s->failed.data(), out, b, n, dist);
  return t;
}

}  // namespace adasync
