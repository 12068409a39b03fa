// run_record.cpp — train.json: writing it, and restoring a resumed run's options from it.
#include "train/run_record.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <functional>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "io/json_input.h"
#include "train/checkpoint.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kFormat = 2;

// Everything train.json records about how a run trains: the options, the device and the number
// of processes.
struct Settings {
  TrainOptions options;
  std::string device;
  int64_t world_size = 1;
};

enum class Kind {
  checked,  // a different value is refused unless override_resume
  free,     // restored, but may be changed (the change is recorded)
};

struct OptionSpec {
  const char* key;
  const char* flag;
  Kind kind;
  std::function<json(const Settings&)> get;
  // Sets the field from a train.json value; `where` names the field in errors.
  std::function<void(Settings&, const json&, const std::string& where)> set;
  // Whether two values mean the same (default: equal JSON values).
  std::function<bool(const json&, const json&)> same = [](const json& a, const json& b) {
    return a == b;
  };
};

template <class T>
OptionSpec field(const char* key, const char* flag, Kind kind, T TrainOptions::*member) {
  OptionSpec spec{key, flag, kind, nullptr, nullptr};
  spec.get = [member](const Settings& s) { return json(s.options.*member); };
  spec.set = [member](Settings& s, const json& v, const std::string& where) {
    if constexpr (std::is_same_v<T, double>) {
      s.options.*member = json_finite(v, where);
    } else if constexpr (std::is_same_v<T, bool>) {
      s.options.*member = json_bool(v, where);
    } else if constexpr (std::is_same_v<T, std::string>) {
      s.options.*member = json_string(v, where);
    } else {
      s.options.*member = static_cast<T>(json_int(v, where, std::numeric_limits<T>::min(),
                                                  std::numeric_limits<T>::max()));
    }
  };
  return spec;
}

// The same folder: both exist and are one, or the same path once made absolute and normal.
bool same_folder(const json& a, const json& b) {
  if (!a.is_string() || !b.is_string()) return a == b;
  const fs::path pa(a.get<std::string>()), pb(b.get<std::string>());
  std::error_code ec;
  if (fs::exists(pa, ec) && fs::exists(pb, ec)) return fs::equivalent(pa, pb, ec) && !ec;
  return fs::weakly_canonical(pa, ec).lexically_normal() ==
         fs::weakly_canonical(pb, ec).lexically_normal();
}

int64_t resolved_warmup(int64_t warmup, int64_t total_steps) {
  return warmup >= 0 ? warmup : std::min<int64_t>(100, total_steps / 10);
}

// Every recorded option but `steps` (handled apart: more steps extend the run). `base_total`
// resolves warmup -1 for comparing.
std::vector<OptionSpec> option_specs(int64_t base_total) {
  std::vector<OptionSpec> specs;
  OptionSpec data = field("data_dir", "--data", Kind::checked, &TrainOptions::data_dir);
  data.same = same_folder;
  specs.push_back(data);
  specs.push_back(field("batch", "--batch", Kind::checked, &TrainOptions::batch));
  specs.push_back(field("seq", "--seq", Kind::checked, &TrainOptions::seq));
  specs.push_back(field("grad_accum", "--grad-accum", Kind::checked, &TrainOptions::grad_accum));
  specs.push_back(field("lr", "--lr", Kind::checked, &TrainOptions::lr));
  specs.push_back(field("min_lr_ratio", "--min-lr-ratio", Kind::checked, &TrainOptions::min_lr_ratio));
  OptionSpec warmup = field("warmup", "--warmup", Kind::checked, &TrainOptions::warmup);
  warmup.same = [base_total](const json& a, const json& b) {
    return a.is_number_integer() && b.is_number_integer()
               ? resolved_warmup(a.get<int64_t>(), base_total) ==
                     resolved_warmup(b.get<int64_t>(), base_total)
               : a == b;
  };
  specs.push_back(warmup);
  specs.push_back(field("weight_decay", "--weight-decay", Kind::checked, &TrainOptions::weight_decay));
  specs.push_back(field("beta1", "--beta1", Kind::checked, &TrainOptions::beta1));
  specs.push_back(field("beta2", "--beta2", Kind::checked, &TrainOptions::beta2));
  specs.push_back(field("grad_clip", "--grad-clip", Kind::checked, &TrainOptions::grad_clip));
  specs.push_back(field("eval_every", "--eval-every", Kind::checked, &TrainOptions::eval_every));
  specs.push_back(field("eval_batches", "--eval-batches", Kind::checked, &TrainOptions::eval_batches));
  specs.push_back(field("checkpoint_every", "--checkpoint-every", Kind::checked,
                        &TrainOptions::checkpoint_every));
  OptionSpec dtype{"compute_dtype", "--precision", Kind::checked, nullptr, nullptr};
  dtype.get = [](const Settings& s) {
    return json(s.options.compute_dtype == DType::bf16 ? "bf16" : "f32");
  };
  dtype.set = [](Settings& s, const json& v, const std::string& where) {
    const std::string& name = json_string(v, where);
    SF_CHECK(name == "f32" || name == "bf16", "{}: expected \"f32\" or \"bf16\", got {}", where,
             json_excerpt(v));
    s.options.compute_dtype = name == "bf16" ? DType::bf16 : DType::f32;
  };
  specs.push_back(dtype);
  OptionSpec device{"device", "--device", Kind::checked, nullptr, nullptr};
  device.get = [](const Settings& s) { return json(s.device); };
  device.set = [](Settings& s, const json& v, const std::string& where) {
    s.device = json_string(v, where);
    SF_CHECK(s.device == "cpu" || s.device == "cuda", "{}: expected \"cpu\" or \"cuda\", got {}",
             where, json_excerpt(v));
  };
  specs.push_back(device);
  OptionSpec world{"world_size", "WORLD_SIZE", Kind::checked, nullptr, nullptr};
  world.get = [](const Settings& s) { return json(s.world_size); };
  world.set = [](Settings& s, const json& v, const std::string& where) {
    s.world_size = json_int(v, where, 1, std::numeric_limits<int>::max());
  };
  specs.push_back(world);
  specs.push_back(field("recompute", "--recompute", Kind::free, &TrainOptions::recompute));
  specs.push_back(field("keep_checkpoints", "--keep-checkpoints", Kind::free,
                        &TrainOptions::keep_checkpoints));
  OptionSpec threads = field("threads", "-t", Kind::free, &TrainOptions::threads);
  threads.set = [](Settings& s, const json& v, const std::string& where) {
    s.options.threads = static_cast<int>(json_int(v, where, 0, 1 << 16));
  };
  specs.push_back(threads);
  return specs;
}

// A value as the user would type it: strings without quotes.
std::string text_of(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

json schedule_json(const RunLrSchedule& s) {
  json replans = json::array();
  for (const LrReplan& r : s.replans)
    replans.push_back({{"from_step", r.from_step}, {"end_step", r.end_step}});
  return {{"peak_lr", s.base.peak_lr},           {"min_lr_ratio", s.base.min_lr_ratio},
          {"warmup_steps", s.base.warmup_steps}, {"total_steps", s.base.total_steps},
          {"replans", replans}};
}

RunLrSchedule schedule_from_json(const json& j, const std::string& where) {
  SF_CHECK(j.is_object(), "{}: expected an object, got {}", where, json_excerpt(j));
  auto member = [&](const char* key) -> const json& { return json_member(j, key, where); };
  auto name = [&](const char* key) { return fmt::format("{}.{}", where, key); };
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  RunLrSchedule s;
  s.base.peak_lr = json_finite(member("peak_lr"), name("peak_lr"));
  s.base.min_lr_ratio = json_finite(member("min_lr_ratio"), name("min_lr_ratio"));
  s.base.warmup_steps = json_int(member("warmup_steps"), name("warmup_steps"), 0, kMax);
  s.base.total_steps = json_int(member("total_steps"), name("total_steps"), 1, kMax);
  const json& replans = member("replans");
  SF_CHECK(replans.is_array(), "{}: expected an array, got {}", name("replans"),
           json_excerpt(replans));
  for (size_t i = 0; i < replans.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", name("replans"), i);
    SF_CHECK(replans[i].is_object(), "{}: expected an object, got {}", at,
             json_excerpt(replans[i]));
    LrReplan r;
    r.from_step = json_int(json_member(replans[i], "from_step", at), at + ".from_step", 0, kMax);
    r.end_step = json_int(json_member(replans[i], "end_step", at), at + ".end_step", 1, kMax);
    s.replans.push_back(r);
  }
  try {
    validate_lr_schedule(s);
  } catch (const Error& e) {
    fail(fmt::format("{}: {}", where, e.what()));
  }
  return s;
}

bool unrecorded_has(const std::vector<std::string>& unrecorded, const std::string& key) {
  return std::find(unrecorded.begin(), unrecorded.end(), key) != unrecorded.end();
}

bool chosen(const TrainOptions& o, const std::string& key) {
  return std::find(o.resume_given.begin(), o.resume_given.end(), key) != o.resume_given.end();
}

json changes_json(const std::vector<OptionChange>& changes) {
  json out = json::array();
  for (const OptionChange& c : changes)
    out.push_back({{"option", c.key}, {"flag", c.flag}, {"from", c.from}, {"to", c.to}});
  return out;
}

json flat_options(const Settings& s) {
  json out{{"steps", s.options.steps}};
  for (const OptionSpec& spec : option_specs(1)) out[spec.key] = spec.get(s);
  std::error_code ec;
  const fs::path absolute = fs::weakly_canonical(fs::absolute(s.options.data_dir, ec), ec);
  out["data_dir_absolute"] = absolute.string();
  return out;
}

json segment_json(int segment, int64_t start_step, int64_t steps) {
  return {{"segment", segment}, {"start_step", start_step}, {"steps", steps}, {"started", utc_now()}};
}

std::string format_lr(double lr) { return fmt::format("{:.3g}", lr); }

}  // namespace

RunLrSchedule lr_schedule_for_new_run(const TrainOptions& o) {
  RunLrSchedule s;
  s.base.peak_lr = o.lr;
  s.base.min_lr_ratio = o.min_lr_ratio;
  s.base.warmup_steps = resolved_warmup(o.warmup, o.steps);
  s.base.total_steps = o.steps;
  return s;
}

ResumePlan plan_resume(const TrainOptions& requested, const std::string& device, int world_size) {
  SF_CHECK(!requested.run_dir.empty(), "--resume: --out (the run folder) is required");
  const std::string& run_dir = requested.run_dir;
  SF_CHECK(checkpoint_exists(run_dir), "--resume: {} has no checkpoint to resume from", run_dir);
  ResumePlan plan;
  plan.start_step = checkpoint_latest_progress(run_dir).step;

  const std::string path = (fs::path(run_dir) / "train.json").string();
  SF_CHECK(fs::exists(path),
           "--resume: {} is missing: it records the run's training options (every run folder "
           "that stagformer train wrote has it)",
           path);
  plan.record = json_read_file(path, kJsonSmallFileBytes);
  const json& record = plan.record;
  SF_CHECK(record.is_object(), "{}: expected a JSON object, got {}", path, json_excerpt(record));
  const int64_t format =
      record.contains("format")
          ? json_int(record["format"], path + ": field 'format'", 1, kFormat)
          : 1;

  // The run's settings; what an older train.json lacks comes from this invocation.
  Settings invocation{requested, device.empty() ? std::string("cpu") : device, world_size};
  Settings run = invocation;
  std::vector<std::string> unrecorded;
  const int64_t run_steps = json_int(json_member(record, "steps", path), path + ": field 'steps'",
                                     1, std::numeric_limits<int64_t>::max());
  run.options.steps = run_steps;
  plan.planned_before = run_steps;
  std::vector<OptionSpec> specs = option_specs(1);  // (warmup's comparison is set below)
  for (const OptionSpec& spec : specs) {
    if (record.contains(spec.key))
      spec.set(run, record[spec.key], fmt::format("{}: field '{}'", path, spec.key));
    else
      unrecorded.push_back(spec.key);
  }

  // The data folder as given, and made absolute (format 2): the same folder named from another
  // working directory is still the run's.
  if (record.contains("data_dir_absolute") && !unrecorded_has(unrecorded, "data_dir")) {
    const std::string absolute =
        json_string(record["data_dir_absolute"], path + ": field 'data_dir_absolute'");
    std::error_code ec;
    const bool as_given_here = fs::is_directory(run.options.data_dir, ec);
    if (chosen(requested, "data_dir") ? same_folder(requested.data_dir, absolute)
                                      : !as_given_here && fs::is_directory(absolute, ec))
      run.options.data_dir = chosen(requested, "data_dir") ? requested.data_dir : absolute;
  }

  // The schedule the run has followed so far.
  if (format >= 2) {
    plan.schedule =
        schedule_from_json(json_member(record, "lr_schedule", path), path + ": lr_schedule");
    SF_CHECK(plan.schedule.base.peak_lr == run.options.lr &&
                 plan.schedule.base.min_lr_ratio == run.options.min_lr_ratio &&
                 lr_schedule_end(plan.schedule) == run_steps,
             "{}: lr_schedule (peak {}, floor ratio {}, end {}) disagrees with the options lr {}, "
             "min_lr_ratio {}, steps {}",
             path, plan.schedule.base.peak_lr, plan.schedule.base.min_lr_ratio,
             lr_schedule_end(plan.schedule), run.options.lr, run.options.min_lr_ratio, run_steps);
    const json& segments = json_member(record, "segments", path);
    SF_CHECK(segments.is_array(), "{}: field 'segments': expected an array, got {}", path,
             json_excerpt(segments));
    plan.segment = static_cast<int>(segments.size()) + 1;
  } else {
    try {
      plan.schedule = lr_schedule_for_new_run(run.options);
      validate_lr_schedule(plan.schedule);
    } catch (const Error& e) {
      fail(fmt::format("{}: {}", path, e.what()));
    }
    plan.segment = 2;  // the segments before this format are counted as one
  }

  // This segment's settings: the run's, with the chosen options that may change.
  specs = option_specs(plan.schedule.base.total_steps);
  Settings next = run;
  std::vector<std::string> conflicts;
  for (const OptionSpec& spec : specs) {
    const std::string key = spec.key;
    const bool is_chosen = key == "device"       ? !device.empty()
                           : key == "world_size" ? true
                                                 : chosen(requested, key);
    const json mine = spec.get(invocation);
    if (std::find(unrecorded.begin(), unrecorded.end(), key) != unrecorded.end()) {
      plan.unrecorded.push_back({key, spec.flag, nullptr, mine});
      continue;  // already the invocation's
    }
    if (!is_chosen) continue;
    const json theirs = spec.get(run);
    if (spec.same(mine, theirs)) continue;
    const OptionChange change{key, spec.flag, theirs, mine};
    if (spec.kind == Kind::free) {
      plan.changed.push_back(change);
    } else if (requested.override_resume) {
      plan.overridden.push_back(change);
    } else {
      conflicts.push_back(
          fmt::format("{} {} (the run's: {})", spec.flag, text_of(mine), text_of(theirs)));
      continue;
    }
    spec.set(next, mine, spec.flag);
  }

  // --steps: more extends the run; fewer is a change like the others.
  if (chosen(requested, "steps") && requested.steps != run_steps) {
    SF_CHECK(requested.steps >= plan.start_step,
             "--resume: the run's latest checkpoint is at step {}, beyond --steps {}",
             plan.start_step, requested.steps);
    const OptionChange change{"steps", "--steps", run_steps, requested.steps};
    if (requested.steps > run_steps) {
      next.options.steps = requested.steps;
    } else if (requested.override_resume) {
      plan.overridden.push_back(change);
      next.options.steps = requested.steps;
    } else {
      conflicts.push_back(fmt::format(
          "--steps {} (the run's: {}; fewer steps than planned end the run early; more extend it)",
          requested.steps, run_steps));
    }
  }
  SF_CHECK(conflicts.empty(),
           "--resume: {} differ{} from the run's ({}):\n  {}\nDrop {} to continue with the run's "
           "values, or add --override-resume to train from step {} on with the new ones (the "
           "change is recorded in train.json and metrics.jsonl)",
           conflicts.size() == 1 ? "this option" : "these options", conflicts.size() == 1 ? "s" : "",
           path, fmt::join(conflicts, "\n  "), conflicts.size() == 1 ? "it" : "them",
           plan.start_step + 1);

  // The schedule from here on: overridden schedule options apply as if planned with them;
  // a changed length re-plans the decay from the resume step.
  RunLrSchedule& schedule = plan.schedule;
  schedule.base.peak_lr = next.options.lr;
  schedule.base.min_lr_ratio = next.options.min_lr_ratio;
  if (next.options.warmup != run.options.warmup)
    schedule.base.warmup_steps = resolved_warmup(next.options.warmup, schedule.base.total_steps);
  if (next.options.steps != run_steps && next.options.steps > plan.start_step)
    schedule.replans.push_back({plan.start_step, next.options.steps});
  try {
    validate_lr_schedule(schedule);
  } catch (const Error& e) {
    fail(fmt::format("--resume: the learning-rate schedule of {} from step {} on: {}", run_dir,
                     plan.start_step, e.what()));
  }

  // The recorded data folder is a path as it was given: from another working directory it may
  // not be found.
  std::error_code ec;
  SF_CHECK(chosen(requested, "data_dir") || fs::is_directory(next.options.data_dir, ec),
           "--resume: the run's data folder {} (from {}) is not there from this working "
           "directory ({}); resume from the folder the run was started in, or give --data (with "
           "--override-resume if it is not the same folder)",
           next.options.data_dir, path, fs::current_path(ec).string());

  // Per invocation, never recorded.
  TrainOptions& o = next.options;
  o.run_dir = requested.run_dir;
  o.resume = true;
  o.resume_given = requested.resume_given;
  o.override_resume = requested.override_resume;
  o.stop_after = requested.stop_after;
  o.progress = requested.progress;
  o.progress_stream = requested.progress_stream;
  o.after_step = requested.after_step;
  o.collective = requested.collective;
  plan.options = o;
  plan.device = next.device;
  plan.world_size = static_cast<int>(next.world_size);
  return plan;
}

std::vector<std::string> describe_resume(const ResumePlan& plan) {
  std::vector<std::string> lines;
  const TrainOptions& o = plan.options;
  if (o.steps != plan.planned_before && o.steps > plan.start_step) {
    const RunLrSchedule& s = plan.schedule;
    const int64_t anchor = std::max(plan.start_step, s.base.warmup_steps);
    const std::string warmup_note =
        anchor > plan.start_step ? fmt::format(" (after the warmup ends at step {})", anchor) : "";
    const double anchor_lr = lr_at(s, anchor), floor = s.base.peak_lr * s.base.min_lr_ratio;
    const std::string how =
        anchor_lr == floor
            ? fmt::format("stays at the floor {} the schedule had reached", format_lr(floor))
            : fmt::format("goes on from {}{} and decays by a cosine to the floor {} at step {}",
                          format_lr(anchor_lr), warmup_note, format_lr(floor), o.steps);
    lines.push_back(fmt::format(
        "{} the run from {} to {} steps at step {}: the learning rate {} (docs/training.md, "
        "\"Extending a run\")",
        o.steps > plan.planned_before ? "extending" : "shortening", plan.planned_before, o.steps,
        plan.start_step, how));
  }
  for (const OptionChange& c : plan.overridden)
    lines.push_back(fmt::format("--override-resume: {} {} instead of the run's {} from step {} on",
                                c.flag, text_of(c.to), text_of(c.from), plan.start_step + 1));
  for (const OptionChange& c : plan.changed)
    lines.push_back(fmt::format("{} {} instead of the run's {} from step {} on", c.flag,
                                text_of(c.to), text_of(c.from), plan.start_step + 1));
  for (const OptionChange& c : plan.unrecorded)
    lines.push_back(fmt::format("the run's train.json (an older format) does not record {}; "
                                "using {}",
                                c.flag, text_of(c.to)));
  return lines;
}

json run_record_new(const TrainOptions& options, const std::string& device, int world_size,
                    const RunLrSchedule& schedule) {
  json r = flat_options(Settings{options, device, world_size});
  r["format"] = kFormat;
  r["lr_schedule"] = schedule_json(schedule);
  r["segments"] = json::array({segment_json(1, 0, options.steps)});
  return r;
}

json run_record_resumed(const ResumePlan& plan) {
  json r = plan.record;
  const json options = flat_options(Settings{plan.options, plan.device, plan.world_size});
  for (const auto& [key, value] : options.items()) r[key] = value;
  if (!r.contains("segments") || !r["segments"].is_array()) {
    r["segments"] = json::array(
        {{{"segment", 1}, {"start_step", 0}, {"note", "before train.json kept a history"}}});
  }
  r["format"] = kFormat;
  r["lr_schedule"] = schedule_json(plan.schedule);
  json segment = segment_json(plan.segment, plan.start_step, plan.options.steps);
  if (plan.options.steps != plan.planned_before) {
    // The re-plan's anchor and the LR it decays from (lr_schedule.h).
    const int64_t anchor = std::max(plan.start_step, plan.schedule.base.warmup_steps);
    segment[plan.extended() ? "extended" : "shortened"] = {
        {"from", plan.planned_before}, {"to", plan.options.steps},
        {"anchor_step", anchor}, {"lr_at_anchor", lr_at(plan.schedule, anchor)}};
  }
  if (!plan.overridden.empty()) segment["overridden"] = changes_json(plan.overridden);
  if (!plan.changed.empty()) segment["changed"] = changes_json(plan.changed);
  if (!plan.unrecorded.empty()) segment["unrecorded"] = changes_json(plan.unrecorded);
  r["segments"].push_back(segment);
  return r;
}

json resume_metrics_record(const ResumePlan& plan) {
  json r{{"step", plan.start_step},  {"event", "resume"}, {"segment", plan.segment},
         {"steps", plan.options.steps}};
  if (plan.options.steps != plan.planned_before) r["planned_steps_before"] = plan.planned_before;
  json changes = json::object();
  for (const auto* list : {&plan.overridden, &plan.changed, &plan.unrecorded})
    for (const OptionChange& c : *list) changes[c.key] = {{"from", c.from}, {"to", c.to}};
  if (!changes.empty()) r["changes"] = changes;
  return r;
}

}  // namespace sf
