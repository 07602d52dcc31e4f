#include "cache/policy_params.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace streamkv::cache {

absl::string_view ParamTypeName(ParamSpec::Type type) {
  switch (type) {
    case ParamSpec::Type::kInt: return "int";
    case ParamSpec::Type::kDouble: return "double";
    case ParamSpec::Type::kBool: return "bool";
    case ParamSpec::Type::kEnum: return "enum";
  }
  return "unknown";
}

namespace {

std::string RangeText(const ParamSpec& spec) {
  return absl::StrCat(spec.min_exclusive ? "(" : "[", spec.min, ", ", spec.max, "]");
}

absl::Status FieldError(absl::string_view policy, const ParamSpec& spec, absl::string_view text,
                        absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("policy '", policy, "': parameter '", spec.name,
                                                 "' must be ", expected, ", got '", text, "'"));
}

}  // namespace

absl::StatusOr<PolicyParams> ParsePolicyParams(absl::string_view text) {
  PolicyParams params;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> name_value = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (name_value.size() != 2 || name_value[0].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy parameters: expected name=value, got '", item, "'"));
    }
    params[name_value[0]] = name_value[1];
  }
  return params;
}

absl::StatusOr<ParsedParams> ParseParams(absl::string_view policy, const std::vector<ParamSpec>& schema,
                                         const PolicyParams& params) {
  for (const auto& [name, text] : params) {
    bool known = false;
    for (const ParamSpec& spec : schema) known = known || spec.name == name;
    if (!known) {
      std::vector<std::string> names;
      for (const ParamSpec& spec : schema) names.push_back(spec.name);
      return absl::InvalidArgumentError(
          absl::StrCat("policy '", policy, "': unknown parameter '", name, "' (known: ",
                       names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
  }

  ParsedParams parsed;
  for (const ParamSpec& spec : schema) {
    auto given = params.find(spec.name);
    if (given == params.end() && spec.default_value.empty()) continue;
    const std::string& text = given != params.end() ? given->second : spec.default_value;
    ParsedParams::Value value;
    switch (spec.type) {
      case ParamSpec::Type::kInt: {
        if (!absl::SimpleAtoi(text, &value.i) || value.i < spec.min || value.i > spec.max) {
          return FieldError(policy, spec, text, absl::StrCat("an integer in ", RangeText(spec)));
        }
        break;
      }
      case ParamSpec::Type::kDouble: {
        if (!absl::SimpleAtod(text, &value.d) || !std::isfinite(value.d) ||
            (spec.min_exclusive ? value.d <= spec.min : value.d < spec.min) ||
            value.d > spec.max) {
          return FieldError(policy, spec, text, absl::StrCat("a number in ", RangeText(spec)));
        }
        break;
      }
      case ParamSpec::Type::kBool: {
        if (!absl::SimpleAtob(text, &value.b)) {
          return FieldError(policy, spec, text, "true or false");
        }
        break;
      }
      case ParamSpec::Type::kEnum: {
        bool valid = false;
        for (const std::string& choice : spec.choices) valid = valid || choice == text;
        if (!valid) {
          return FieldError(policy, spec, text,
                            absl::StrCat("one of ", absl::StrJoin(spec.choices, "|")));
        }
        value.s = text;
        break;
      }
    }
    parsed.values_[spec.name] = std::move(value);
  }
  return parsed;
}

bool ParsedParams::Has(absl::string_view name) const { return values_.contains(name); }
int64_t ParsedParams::Int(absl::string_view name) const { return values_.at(name).i; }
double ParsedParams::Double(absl::string_view name) const { return values_.at(name).d; }
bool ParsedParams::Bool(absl::string_view name) const { return values_.at(name).b; }
const std::string& ParsedParams::Enum(absl::string_view name) const { return values_.at(name).s; }

}  // namespace streamkv::cache
