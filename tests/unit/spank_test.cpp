// The SPANK plugin's pure parts (the --vc options, the plugstack.conf arguments) and the
// plugin file itself: slurmd refuses a plugin whose four identification symbols it cannot find.
#include <dlfcn.h>

#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "spank/config.hpp"
#include "spank/options.hpp"
#include "spank/pilot_files.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::spank {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using vcpilot::testing::TempDir;

TEST(SpankOptions, AnyVcOptionAsksForTheVirtualCluster) {
    JobOptions options;
    ASSERT_TRUE(apply_option(options, "vc-keys", "exchange"));
    EXPECT_TRUE(options.enabled);
    EXPECT_EQ(options.keys, KeyMode::Exchange);
    JobOptions plain;
    ASSERT_TRUE(apply_option(plain, "vc", ""));
    EXPECT_TRUE(plain.enabled);
    EXPECT_FALSE(plain.net);
}

TEST(SpankOptions, AcceptsGoodValues) {
    JobOptions options;
    ASSERT_TRUE(apply_option(options, "vc-net", "10.77.0.0/24"));
    ASSERT_TRUE(apply_option(options, "vc-overlay", "n2n"));
    ASSERT_TRUE(apply_option(options, "vc-image", "/srv/images/debian"));
    ASSERT_TRUE(apply_option(options, "vc-cluster", "vc-0123abcd"));
    ASSERT_TRUE(apply_option(options, "vc-hostname-prefix", "mpi"));
    EXPECT_EQ(options.net->to_string(), "10.77.0.0/24");
    EXPECT_EQ(options.overlay, Overlay::N2n);
    EXPECT_EQ(options.image, "/srv/images/debian");
    EXPECT_EQ(options.cluster, "vc-0123abcd");
    EXPECT_EQ(options.hostname_prefix, "mpi");
}

TEST(SpankOptions, RefusesBadValuesWithOneLineNamingTheOption) {
    const std::pair<const char*, const char*> bad[] = {
        {"vc-net", "10.77.0.0"},
        {"vc-net", "10.77.0.1/24"},
        {"vc-net", "10.77.0.0/31"},
        {"vc-net", "banana"},
        {"vc-overlay", "gre"},
        {"vc-image", "relative/dir"},
        {"vc-image", "/a\nb"},
        {"vc-cluster", "42"},
        {"vc-cluster", "vc-0123ABCD"},
        {"vc-keys", "rsa"},
        {"vc-hostname-prefix", "Bad_Name"},
        {"vc-hostname-prefix", "-x"},
        {"vc-image", "/srv/../etc"},
        {"vc-image", "/srv//img"},
        {"vc-image", "/srv/img/"},
        {"vc-image", "/srv/./img"},
    };
    for (const auto& [name, value] : bad) {
        JobOptions options;
        const auto status = apply_option(options, name, value);
        ASSERT_FALSE(status) << name << "=" << value;
        EXPECT_THAT(status.error().message, StartsWith(std::string("--") + name + "="));
        EXPECT_EQ(status.error().message.find('\n'), std::string::npos) << status.error().message;
    }
    JobOptions options;
    const auto status = apply_option(options, "vc-net", "10.77.0.1/24");
    EXPECT_THAT(status.error().message, HasSubstr("the network is 10.77.0.0/24"));
}

TEST(SpankOptions, AClusterJoinedBringsItsOwnRangeOverlayKeysAndNames) {
    const std::pair<const char*, const char*> set_by_cluster[] = {
        {"vc-net", "10.77.0.0/24"},
        {"vc-overlay", "vxlan"},
        {"vc-keys", "exchange"},
        {"vc-hostname-prefix", "mpi"},
    };
    for (const auto& [name, value] : set_by_cluster) {
        JobOptions options;
        ASSERT_TRUE(apply_option(options, "vc-cluster", "vc-0123abcd"));
        ASSERT_TRUE(apply_option(options, name, value));
        const auto status = check_options(options);
        ASSERT_FALSE(status) << name;
        EXPECT_EQ(status.error().message,
                  std::string("--") + name +
                      " cannot go with --vc-cluster: cluster vc-0123abcd already has its own "
                      "(set at vcctl create); drop --" +
                      name);
        // Alone, each is fine.
        JobOptions alone;
        ASSERT_TRUE(apply_option(alone, name, value));
        EXPECT_TRUE(check_options(alone)) << name;
    }
    JobOptions joined;
    ASSERT_TRUE(apply_option(joined, "vc-cluster", "vc-0123abcd"));
    ASSERT_TRUE(apply_option(joined, "vc-image", "/srv/images/debian"));
    EXPECT_TRUE(check_options(joined)) << "--vc-image goes with --vc-cluster";
}

TEST(SpankConfig, DefaultsWithoutArguments) {
    const auto config = parse_config({});
    ASSERT_TRUE(config);
    EXPECT_EQ(config->crm, "unix:/run/vcpilot/crmd.sock");
    EXPECT_EQ(config->ready_timeout, std::chrono::seconds(60));
    EXPECT_EQ(config->overlay, Overlay::Vxlan);
    EXPECT_EQ(config->keys, KeyMode::Ca);
    EXPECT_EQ(config->image_mount, "/mnt");
    EXPECT_EQ(config->image_roots, std::vector<std::string>{"/"});
}

TEST(SpankConfig, ReadsEveryKey) {
    const auto config =
        parse_config({"crm=172.16.1.2:7400", "munge_socket=/run/munge/munge.socket",
                      "pilot=/opt/vcpilot/vc-pilot", "run_dir=/run/vc", "ready_timeout=90",
                      "default_overlay=n2n", "default_keys=exchange", "image_mount=/vc/image",
                      "image_roots=/srv/images:/scratch/images"});
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_EQ(config->crm, "172.16.1.2:7400");
    EXPECT_EQ(config->munge_socket, "/run/munge/munge.socket");
    EXPECT_EQ(config->pilot, "/opt/vcpilot/vc-pilot");
    EXPECT_EQ(config->run_dir, "/run/vc");
    EXPECT_EQ(config->ready_timeout, std::chrono::seconds(90));
    EXPECT_EQ(config->overlay, Overlay::N2n);
    EXPECT_EQ(config->keys, KeyMode::Exchange);
    EXPECT_EQ(config->image_mount, "/vc/image");
    EXPECT_EQ(config->image_roots, (std::vector<std::string>{"/srv/images", "/scratch/images"}));
}

TEST(SpankConfig, AnUnknownKeyOrABadValueIsAnErrorNamingIt) {
    const std::pair<const char*, const char*> bad[] = {
        {"crmd=x", "unknown key 'crmd'"},
        {"nokey", "not key=value"},
        {"=x", "not key=value"},
        {"crm=", "crm= is empty"},
        {"pilot=vc-pilot", "pilot="},
        {"ready_timeout=0", "ready_timeout="},
        {"ready_timeout=5s", "ready_timeout="},
        {"default_overlay=gre", "default_overlay="},
        {"default_keys=rsa", "default_keys="},
        {"image_mount=mnt", "image_mount="},
        {"image_mount=/tmp/image", "image_mount="},
        {"image_mount=/", "image_mount="},
        {"image_mount=/usr/local", "is inside /usr, where the job's root processes"},
        {"image_mount=/mnt/../etc", "'/etc' is /etc, where"},
        {"image_roots=/srv/images:images", "image_roots="},
        {"image_roots=", "image_roots="},
    };
    for (const auto& [argument, says] : bad) {
        const auto config = parse_config({argument});
        ASSERT_FALSE(config) << argument;
        EXPECT_THAT(config.error().message, StartsWith("plugstack.conf: "));
        EXPECT_THAT(config.error().message, HasSubstr(says)) << argument;
    }
}

TEST(SpankPlugin, ExportsWhatSlurmdLooksFor) {
    // Slurm's own symbols (slurm_error, spank_option_register) come from the loading program;
    // resolve lazily so that the plugin loads here too.
    void* plugin = ::dlopen(VCPILOT_SPANK_PLUGIN, RTLD_LAZY | RTLD_LOCAL);
    ASSERT_NE(plugin, nullptr) << ::dlerror();
    for (const char* symbol :
         {"plugin_name", "plugin_type", "plugin_version", "spank_plugin_version",
          "slurm_spank_init", "slurm_spank_task_init_privileged"}) {
        EXPECT_NE(::dlsym(plugin, symbol), nullptr) << symbol;
    }
    EXPECT_STREQ(static_cast<const char*>(::dlsym(plugin, "plugin_name")), "vcpilot");
    EXPECT_STREQ(static_cast<const char*>(::dlsym(plugin, "plugin_type")), "spank");
    // Nothing of ours leaks into slurmd's symbol namespace.
    EXPECT_EQ(::dlsym(plugin,
                      "_ZN7vcpilot5spank12parse_configERKSt6vectorINSt7__cxx1112basic_"
                      "stringIcSt11char_traitsIcESaIcEEESaIS7_EE"),
              nullptr);
    ::dlclose(plugin);
}

TEST(SpankPilotFiles, ReadsWhatThePilotAndThePrologWrote) {
    TempDir temp;
    const PilotDir dir = pilot_dir(temp.path().string(), "node1", "42");
    EXPECT_EQ(dir.pid_file(), temp.path() / "node1" / "pilot-42.pid");
    EXPECT_EQ(dir.log_file(), temp.path() / "node1" / "pilot-42.log");
    EXPECT_FALSE(read_pilot_state(dir));
    EXPECT_EQ(read_pilot_pid(dir), 0);
    EXPECT_FALSE(read_namespaces(dir));

    std::filesystem::create_directories(dir.root);
    std::ofstream(dir.state_file()) << "state=READY\npid=77\naddress=10.65.0.1/24\nreason=\n";
    std::ofstream(dir.pid_file()) << "77\n";
    std::ofstream(dir.namespaces_file()) << "holder 78\nnet 4026532000\nmnt 4026532001\n";
    std::ofstream(dir.log_file())
        << "2026-12-02T13:32:19.906 vc-pilot[19539] info: job 42 on node1: listening\n"
        << "2026-12-02T13:32:19.916 vc-pilot[19539] error: job 42: the CRM refused the pilot\n\n";
    auto state = read_pilot_state(dir);
    ASSERT_TRUE(state);
    EXPECT_EQ((*state)["state"], "READY");
    EXPECT_EQ((*state)["address"], "10.65.0.1/24");
    EXPECT_EQ(read_pilot_pid(dir), 77);
    auto recorded = read_namespaces(dir);
    ASSERT_TRUE(recorded);
    EXPECT_EQ(recorded->holder, 78);
    EXPECT_EQ(recorded->net, 4026532000U);
    EXPECT_EQ(last_log_line(dir), "job 42: the CRM refused the pilot");

    std::ofstream(dir.namespaces_file()) << "holder 78\n";
    EXPECT_FALSE(read_namespaces(dir));
}

TEST(SpankPilotFiles, TellsLiveProcessesFromDeadOnes) {
    EXPECT_TRUE(process_alive(::getpid()));
    EXPECT_FALSE(process_alive(0));
    EXPECT_FALSE(process_alive(-1));
}

}  // namespace
}  // namespace vcpilot::spank
