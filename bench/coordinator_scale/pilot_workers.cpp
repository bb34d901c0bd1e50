#include "bench/coordinator_scale/pilot_workers.hpp"

#include <unistd.h>

#include <algorithm>
#include <sstream>

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> words_of(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> words;
    for (std::string word; in >> word;) {
        words.push_back(word);
    }
    return words;
}

// A worker's side: the fleets of its sites, one command at a time.
class PilotWorker {
  public:
    PilotWorker(const Options& options, const std::vector<KeyPair>& keys,
                const std::string& munge_socket, std::vector<std::uint32_t> sites)
        : options_(options), keys_(keys), munge_socket_(munge_socket), sites_(std::move(sites)) {}

    // Answers commands until "exit" or the end of input; throws on anything else.
    int serve(testing::LineChannel& channel) {
        while (auto line = channel.receive(Clock::now() + std::chrono::hours(24))) {
            const auto words = words_of(*line);
            if (words.empty()) {
                continue;
            }
            std::string answer;
            if (words[0] == "prepare" && words.size() == 4 + sites_.size()) {
                answer = prepare(words);
            } else if (words[0] == "go") {
                answer = go();
            } else if (words[0] == "drain" && words.size() == 2) {
                answer = drain(std::chrono::milliseconds(std::stol(words[1])));
            } else if (words[0] == "exit") {
                break;
            } else {
                throw std::runtime_error("unknown command " + *line);
            }
            must(channel.send(answer), "answering the benchmark");
        }
        fleets_.clear();
        return 0;
    }

  private:
    // prepare CLUSTER NODES JOB TARGET...: the pilots of every site, credentials minted.
    std::string prepare(const std::vector<std::string>& words) {
        const std::string& cluster = words[1];
        const auto nodes = static_cast<std::uint32_t>(std::stoul(words[2]));
        const auto t = Clock::now();
        std::vector<std::vector<SimPilotSpec>> specs(sites_.size());
        std::vector<SimPilotSpec*> all;
        for (std::size_t k = 0; k < sites_.size(); ++k) {
            specs[k].resize(nodes);
            for (std::uint32_t n = 0; n < nodes; ++n) {
                specs[k][n] = spec(cluster, words[3], sites_[k], n);
                all.push_back(&specs[k][n]);
            }
        }
        mint_credentials(all, munge_socket_, options_.mint_threads);
        fleets_.clear();
        const std::size_t channels = std::min<std::size_t>(options_.channels_per_site, nodes);
        for (std::size_t k = 0; k < sites_.size(); ++k) {
            fleets_.push_back(std::make_unique<SimPilotFleet>(
                separate_channels(words[4 + k], channels), std::move(specs[k])));
        }
        return fmt::format("prepared {:.3f}", seconds_between(t, Clock::now()));
    }

    // Node n (0-based) of site number `site`.
    SimPilotSpec spec(const std::string& cluster, const std::string& job, std::uint32_t site,
                      std::uint32_t n) const {
        SimPilotSpec spec;
        spec.cluster = cluster;
        spec.host = host_of(fmt::format("s{}", site), n + 1);
        spec.job = job;
        spec.underlay = underlay_of(site, n + 1);
        spec.rank = n + 1;  // as Slurm starts them: the site's n-th node
        const KeyPair& pair = keys_[std::size_t{site - 1} * options_.nodes + n];
        spec.host_key = pair.host;
        spec.user_key = pair.user;
        return spec;
    }

    std::string go() {
        std::size_t total = 0;
        for (auto& fleet : fleets_) {
            fleet->start();
            total += fleet->size();
        }
        const std::size_t ready =
            wait_all_ready(fleets_, Clock::now() + std::chrono::seconds(options_.timeout_s));
        const auto t_views = Clock::now();
        if (ready < total) {
            explain_failures(fleets_);
        }
        std::uint64_t bytes = 0, setup_bytes = 0;
        for (const auto& fleet : fleets_) {
            bytes += fleet->bytes_received();
            for (std::size_t i = 0; i < fleet->size(); ++i) {
                v1::PilotCommand command;
                *command.mutable_setup() = fleet->outcome(i).setup;
                setup_bytes += command.ByteSizeLong();
            }
        }
        return fmt::format("views {} {} {} {} {}", ready, total, t_views.time_since_epoch().count(),
                           bytes, setup_bytes);
    }

    std::string drain(std::chrono::milliseconds wait) {
        const auto until = Clock::now() + wait;
        for (auto& fleet : fleets_) {
            fleet->wait_done(std::chrono::duration_cast<std::chrono::milliseconds>(
                std::max(until - Clock::now(), Clock::duration(10ms))));
        }
        fleets_.clear();
        return "drained";
    }

    const Options& options_;
    const std::vector<KeyPair>& keys_;
    const std::string munge_socket_;
    const std::vector<std::uint32_t> sites_;
    std::vector<std::unique_ptr<SimPilotFleet>> fleets_;
};

}  // namespace

PilotWorkers::PilotWorkers(const Options& options, const std::vector<KeyPair>& keys,
                           const std::string& munge_socket) {
    const unsigned count = std::max(1U, std::min(options.pilot_workers, options.sites));
    for (unsigned w = 0; w < count; ++w) {
        auto process = std::make_unique<testing::ChildProcess>("pilot worker");
        std::vector<std::uint32_t> sites;
        for (std::uint32_t s = w * options.sites / count + 1; s <= (w + 1) * options.sites / count;
             ++s) {
            sites.push_back(s);
        }
        auto to_worker = must(process->start_worker([&](testing::LineChannel& channel) {
            return PilotWorker(options, keys, munge_socket, sites).serve(channel);
        }),
                              "starting a pilot worker");
        // Put together from its parts here: with a named Worker moved into the vector, clang's
        // static analyzer took the process for leaked (a false positive).
        workers_.push_back(Worker{std::move(process), std::move(to_worker), std::move(sites)});
    }
}

PilotWorkers::~PilotWorkers() {
    for (auto& worker : workers_) {
        [[maybe_unused]] const auto told = worker.channel.send("exit");
        worker.channel.close_sending();
    }
    for (auto& worker : workers_) {
        [[maybe_unused]] const auto ended = worker.process->wait_exit(30s);
    }
}

void PilotWorkers::tell(Worker& worker, const std::string& line) {
    if (!worker.channel.send(line)) {
        throw std::runtime_error(
            fmt::format("pilot worker {} is gone (told '{}')", worker.process->pid(), line));
    }
}

double PilotWorkers::prepare(const std::string& cluster, std::uint32_t nodes,
                             const std::string& job, const std::vector<std::string>& targets,
                             Clock::time_point deadline) {
    for (auto& worker : workers_) {
        std::string line = fmt::format("prepare {} {} {}", cluster, nodes, job);
        for (const std::uint32_t s : worker.sites) {
            line += " " + targets[s - 1];
        }
        tell(worker, line);
    }
    double longest = 0;
    for (const auto& words : answers("prepared", 2, deadline)) {
        longest = std::max(longest, std::stod(words[1]));
    }
    return longest;
}

void PilotWorkers::go() {
    for (auto& worker : workers_) {
        tell(worker, "go");
    }
}

PilotWorkers::Views PilotWorkers::wait_views(Clock::time_point deadline) {
    Views views;
    for (const auto& words : answers("views", 6, deadline + 10s)) {
        views.ready += std::stoull(words[1]);
        views.total += std::stoull(words[2]);
        views.last = std::max(views.last, Clock::time_point(Clock::duration(std::stoll(words[3]))));
        views.bytes += std::stoull(words[4]);
        views.setup_bytes += std::stoull(words[5]);
    }
    return views;
}

void PilotWorkers::drain(std::chrono::milliseconds wait) {
    for (auto& worker : workers_) {
        tell(worker, fmt::format("drain {}", wait.count()));
    }
    answers("drained", 1, Clock::now() + wait + 10s);
}

double PilotWorkers::cpu_seconds() const {
    double total = 0;
    for (const auto& worker : workers_) {
        total += cpu_seconds_of(worker.process->pid());
    }
    return total;
}

std::vector<std::vector<std::string>> PilotWorkers::answers(const std::string& word,
                                                            std::size_t words,
                                                            Clock::time_point deadline) {
    std::vector<std::vector<std::string>> out;
    for (auto& worker : workers_) {
        const pid_t pid = worker.process->pid();
        auto line = worker.channel.receive(deadline);
        if (!line) {
            throw std::runtime_error(
                fmt::format("pilot worker {} did not answer '{}' in time", pid, word));
        }
        auto parts = words_of(*line);
        if (parts.size() != words || parts[0] != word) {
            throw std::runtime_error(
                fmt::format("pilot worker {}: '{}', not '{}'", pid, *line, word));
        }
        out.push_back(std::move(parts));
    }
    return out;
}

}  // namespace vcpilot::coordinator::scale_bench
