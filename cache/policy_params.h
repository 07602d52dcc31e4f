// Policy parameters: declared schemas, and parsing of user-supplied text values against them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace streamkv::cache {

// Parameters as a client sends them: name → text ("512", "0.3", "true", "frames").
using PolicyParams = std::map<std::string, std::string>;

// One parameter of a policy, as published to clients (Describe) and enforced by ParseParams.
struct ParamSpec {
  enum class Type { kInt, kDouble, kBool, kEnum };

  std::string name;
  Type type = Type::kInt;
  // Text of the default; empty means "absent unless given" (e.g. one of several budget forms).
  std::string default_value;
  double min = 0;  // inclusive bounds for kInt and kDouble
  double max = 0;
  bool min_exclusive = false;  // kDouble only: the bound itself is not allowed
  std::vector<std::string> choices;  // kEnum only
  std::string help;
};

absl::string_view ParamTypeName(ParamSpec::Type type);

// Parameters validated against a schema, defaults applied. Accessors take a name declared in the
// schema with the matching type.
class ParsedParams {
 public:
  bool Has(absl::string_view name) const;
  int64_t Int(absl::string_view name) const;
  double Double(absl::string_view name) const;
  bool Bool(absl::string_view name) const;
  const std::string& Enum(absl::string_view name) const;

 private:
  friend absl::StatusOr<ParsedParams> ParseParams(absl::string_view, const std::vector<ParamSpec>&,
                                                  const PolicyParams&);
  struct Value {
    int64_t i = 0;
    double d = 0;
    bool b = false;
    std::string s;
  };
  absl::flat_hash_map<std::string, Value> values_;
};

// Parses the command-line form "name=value,name=value" (empty text: no parameters).
// InvalidArgument naming the malformed item.
absl::StatusOr<PolicyParams> ParsePolicyParams(absl::string_view text);

// Checks every given parameter against `schema` (unknown names, types, ranges, choices) and fills
// in defaults. Errors are InvalidArgument naming the policy and the offending field.
absl::StatusOr<ParsedParams> ParseParams(absl::string_view policy, const std::vector<ParamSpec>& schema,
                                         const PolicyParams& params);

}  // namespace streamkv::cache
