// A plain C interface to the official MLPerf LoadGen (mlcommons-loadgen 6.0.17), compiled
// together with its C++ sources into one shared library by scripts/build_official_loadgen.sh.
// loadgen-client loads that library at run time (src/official.rs) for `--loadgen official`.
//
// The settings come from the official parser itself: TestSettings::FromConfig applies the
// embedded mlperf.conf and then user.conf, and the command line's overrides are assigned after
// it, as a Python harness does. The SUT and QSL are C callbacks into the client.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "loadgen.h"
#include "query_sample.h"
#include "query_sample_library.h"
#include "system_under_test.h"
#include "test_settings.h"
#include "version.h"

// Only the lgo_* functions are exported (the library is built with -fvisibility=hidden).
#define LGO_EXPORT __attribute__((visibility("default")))

extern "C" {

/// One issued sample: mlperf::QuerySample's layout, so a query's samples pass as they are.
struct LgoSample {
  uint64_t id;
  uint64_t index;
};

/// One completed sample; its data is copied before lgo_complete returns.
struct LgoResponse {
  uint64_t id;
  const uint8_t* data;
  uint64_t size;
};

/// The client's side of the SUT and QSL. `context` is passed back unchanged.
struct LgoCallbacks {
  uintptr_t context;
  void (*issue_query)(uintptr_t context, const LgoSample* samples,
                      size_t count);
  void (*flush_queries)(uintptr_t context);
  void (*load_samples)(uintptr_t context, const uint64_t* indices,
                       size_t count);
  void (*unload_samples)(uintptr_t context, const uint64_t* indices,
                         size_t count);
};

/// One test: what to read the settings from, what to override, where the logs go.
struct LgoTest {
  int32_t scenario;  // mlperf::TestScenario: 0 SingleStream ... 3 Offline
  const char* model;         // the benchmark name conf lines are looked up with
  const char* user_conf;     // NULL: the embedded mlperf.conf only
  const char* audit_config;  // read when it exists, as StartTest does
  const char* outdir;
  uint8_t enable_trace;
  const char* sut_name;
  const char* qsl_name;
  uint64_t total_sample_count;
  uint64_t performance_sample_count;
  // Overrides, assigned after the conf files when their flag is set.
  uint8_t has_mode;
  int32_t mode;  // mlperf::TestMode: 0 SubmissionRun ... 3 FindPeakPerformance
  uint8_t has_target_qps;
  double target_qps;  // server_target_qps and offline_expected_qps
  uint8_t has_target_latency_ns;
  uint64_t target_latency_ns;  // server_target_latency_ns, multi_stream_expected_latency_ns
  uint8_t has_min_duration_ms;
  uint64_t min_duration_ms;
  uint8_t has_samples_per_query;
  uint64_t samples_per_query;
  uint8_t has_performance_sample_count_override;
  uint64_t performance_sample_count_override;
};

/// The LoadGen release compiled in (VERSION.txt of the sources).
LGO_EXPORT const char* lgo_version(void);
/// Runs the test; returns 0, or 1 with the reason in `error` (NUL-terminated, truncated to
/// `error_len`). A user.conf that does not parse is logged and ignored, as StartTest does.
LGO_EXPORT int32_t lgo_start_test(const LgoTest* test,
                                  const LgoCallbacks* callbacks, char* error,
                                  size_t error_len);
/// QuerySamplesComplete for `count` responses.
LGO_EXPORT void lgo_complete(const LgoResponse* responses, size_t count);
}

static_assert(sizeof(LgoSample) == sizeof(mlperf::QuerySample) &&
                  offsetof(mlperf::QuerySample, id) == offsetof(LgoSample, id) &&
                  offsetof(mlperf::QuerySample, index) ==
                      offsetof(LgoSample, index),
              "LgoSample must have mlperf::QuerySample's layout");

namespace {

class CallbackSut : public mlperf::SystemUnderTest {
 public:
  CallbackSut(const LgoCallbacks& callbacks, std::string name)
      : callbacks_(callbacks), name_(std::move(name)) {}

  const std::string& Name() override { return name_; }

  void IssueQuery(const std::vector<mlperf::QuerySample>& samples) override {
    callbacks_.issue_query(callbacks_.context,
                           reinterpret_cast<const LgoSample*>(samples.data()),
                           samples.size());
  }

  void FlushQueries() override { callbacks_.flush_queries(callbacks_.context); }

 private:
  LgoCallbacks callbacks_;
  std::string name_;
};

class CallbackQsl : public mlperf::QuerySampleLibrary {
 public:
  CallbackQsl(const LgoCallbacks& callbacks, std::string name, size_t total,
              size_t performance)
      : callbacks_(callbacks),
        name_(std::move(name)),
        total_(total),
        performance_(performance) {}

  const std::string& Name() override { return name_; }
  size_t TotalSampleCount() override { return total_; }
  size_t PerformanceSampleCount() override { return performance_; }

  void LoadSamplesToRam(
      const std::vector<mlperf::QuerySampleIndex>& samples) override {
    std::vector<uint64_t> indices(samples.begin(), samples.end());
    callbacks_.load_samples(callbacks_.context, indices.data(), indices.size());
  }

  void UnloadSamplesFromRam(
      const std::vector<mlperf::QuerySampleIndex>& samples) override {
    std::vector<uint64_t> indices(samples.begin(), samples.end());
    callbacks_.unload_samples(callbacks_.context, indices.data(),
                              indices.size());
  }

 private:
  LgoCallbacks callbacks_;
  std::string name_;
  size_t total_;
  size_t performance_;
};

const char* ScenarioName(mlperf::TestScenario scenario) {
  switch (scenario) {
    case mlperf::TestScenario::SingleStream:
      return "SingleStream";
    case mlperf::TestScenario::MultiStream:
      return "MultiStream";
    case mlperf::TestScenario::Server:
      return "Server";
    case mlperf::TestScenario::Offline:
      return "Offline";
  }
  return "";
}

void ApplyOverrides(const LgoTest& test, mlperf::TestSettings& settings) {
  if (test.has_mode) settings.mode = static_cast<mlperf::TestMode>(test.mode);
  if (test.has_target_qps) {
    settings.server_target_qps = test.target_qps;
    settings.offline_expected_qps = test.target_qps;
  }
  if (test.has_target_latency_ns) {
    settings.server_target_latency_ns = test.target_latency_ns;
    settings.multi_stream_expected_latency_ns =
        static_cast<double>(test.target_latency_ns);
  }
  if (test.has_min_duration_ms) settings.min_duration_ms = test.min_duration_ms;
  if (test.has_samples_per_query) {
    settings.multi_stream_samples_per_query = test.samples_per_query;
  }
  if (test.has_performance_sample_count_override) {
    settings.performance_sample_count_override =
        test.performance_sample_count_override;
  }
}

void CopyError(const std::string& message, char* error, size_t error_len) {
  if (error == nullptr || error_len == 0) return;
  size_t n = message.size() < error_len - 1 ? message.size() : error_len - 1;
  message.copy(error, n);
  error[n] = '\0';
}

}  // namespace

const char* lgo_version(void) {
  static const std::string version = mlperf::LoadgenVersion();
  return version.c_str();
}

int32_t lgo_start_test(const LgoTest* test, const LgoCallbacks* callbacks,
                       char* error, size_t error_len) {
  try {
    mlperf::TestSettings settings;
    settings.scenario = static_cast<mlperf::TestScenario>(test->scenario);
    const char* scenario = ScenarioName(settings.scenario);
    // conf_type 1 applies the embedded mlperf.conf first; 0 applies it alone.
    if (test->user_conf != nullptr) {
      settings.FromConfig(test->user_conf, test->model, scenario, 1);
    } else {
      settings.FromConfig("", test->model, scenario, 0);
    }
    ApplyOverrides(*test, settings);

    mlperf::LogSettings log_settings;
    log_settings.log_output.outdir = test->outdir;
    log_settings.enable_trace = test->enable_trace != 0;

    CallbackSut sut(*callbacks, test->sut_name);
    CallbackQsl qsl(*callbacks, test->qsl_name, test->total_sample_count,
                    test->performance_sample_count);
    mlperf::StartTest(&sut, &qsl, settings, log_settings, test->audit_config);
    return 0;
  } catch (const std::exception& e) {
    CopyError(e.what(), error, error_len);
    return 1;
  } catch (...) {
    CopyError("unknown C++ exception", error, error_len);
    return 1;
  }
}

void lgo_complete(const LgoResponse* responses, size_t count) {
  std::vector<mlperf::QuerySampleResponse> converted;
  converted.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    converted.emplace_back(static_cast<mlperf::ResponseId>(responses[i].id),
                           reinterpret_cast<uintptr_t>(responses[i].data),
                           static_cast<size_t>(responses[i].size), 0);
  }
  mlperf::QuerySamplesComplete(converted.data(), converted.size());
}
