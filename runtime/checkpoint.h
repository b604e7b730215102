// Checkpoint files: everything a run needs to continue, written atomically.
//
// Layout (little-endian):
//   "ADASYNCK"  magic, 8 bytes
//   u32         format version (kCheckpointFormat)
//   u64         header length, then the header: JSON (settings, counters,
//               engine and schedule state)
//   u32         number of blobs; each: u32 name length, name, u64 byte
//               count, bytes (parameters, optimizer state, snapshots, ...)
//   u32         CRC-32 (zlib) of every byte before it
// A reader checks the magic, the version, every length against the file size
// and the checksum before it trusts anything, and says what it expected and
// what it found. Writers go through write_file_atomic (temp file, fsync,
// rename), so a crash mid-write leaves the previous checkpoint intact.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/context.h"

namespace adasync {

constexpr uint32_t kCheckpointFormat = 1;

struct Checkpoint {
  nlohmann::json header;
  std::map<std::string, std::vector<unsigned char>> blobs;

  void put_floats(const std::string& name, const float* p, size_t n);
  std::vector<float> floats(const std::string& name) const;  // throws if missing or mis-sized
  void put_u64s(const std::string& name, const std::vector<uint64_t>& v);
  std::vector<uint64_t> u64s(const std::string& name) const;
  bool has(const std::string& name) const { return blobs.count(name) != 0; }
};

// Serialises to bytes / parses bytes (CheckpointError on any damage).
std::vector<unsigned char> encode_checkpoint(const Checkpoint& c);
Checkpoint decode_checkpoint(const unsigned char* data, size_t size, const std::string& what);

// A damaged or ill-fitting checkpoint: bad input (exit code 2).
class CheckpointError : public UsageError {
 public:
  using UsageError::UsageError;
};

// Writes `c` as DIR/ckpt-<version>.bin atomically, then deletes all but the
// newest `keep` (at least 1) checkpoints of DIR that are this run's (the
// header's "run_id" equals c's) and read whole (their CRC checks out). This
// run's damaged ones are never counted (and are deleted: a resume skips
// them); files of another run, with damaged headers, foreign or misnamed are
// never counted and never deleted. `c.header["version"]` must equal
// `version`. Returns the path written; errors name `what` (the flag of DIR).
std::string save_checkpoint(const std::string& dir, int64_t version, const Checkpoint& c, int keep,
                            const std::string& what);
Checkpoint load_checkpoint(const std::string& path);
// The header JSON of a checkpoint file, reading only the magic, the format
// and the header (not the sections, not the CRC: load_checkpoint checks
// those). CheckpointError naming the file when they do not read.
nlohmann::json read_checkpoint_header(const std::string& path);
// The file name of version v's checkpoint ("ckpt-000000000042.bin").
std::string checkpoint_name(int64_t version);

// A checkpoint of DIR is a file named checkpoint_name(v) whose header reads
// (read_checkpoint_header) and holds the integer "version" v: the name and
// the version inside agree. A ckpt-*.bin file whose name and inside version
// differ was copied or renamed by hand: it is not resumed from, not counted
// against --checkpoint-keep and never deleted, like any foreign file.
struct CheckpointListing {
  std::vector<std::pair<int64_t, std::string>> valid;  // (version inside, path), newest first
  std::vector<std::string> ignored;                    // "PATH: why" for each other ckpt-*.bin file
};
CheckpointListing scan_checkpoints(const std::string& dir);
// scan_checkpoints(dir).valid.
std::vector<std::pair<int64_t, std::string>> list_valid_checkpoints(const std::string& dir);
// The paths of list_valid_checkpoints (newest first): what --resume tries, in
// order (a file whose sections or CRC are damaged still fails at load).
std::vector<std::string> list_checkpoints(const std::string& dir);

// A new run id: 16 hexadecimal digits from the OS's entropy, pid and time.
std::string new_run_id();

// Removes the temporaries a write_file_atomic of a checkpoint leaves when the
// process is killed mid-write (DIR/ckpt-<digits>.bin.tmp, regular files only;
// nothing else is touched) and returns how many it removed. Call it at start,
// holding the directory's lock, so no live writer's file is taken.
// Errors name `what` (the flag the directory came from) and the file.
int remove_stale_temporaries(const std::string& dir, const std::string& what);

}  // namespace adasync
