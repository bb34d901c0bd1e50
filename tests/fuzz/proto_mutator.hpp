// Structure-aware mutation for the libFuzzer targets whose input is one selector byte followed by
// a serialized protobuf message.
//
// Byte mutations alone rarely get past protobuf's nested length prefixes (a byte inserted into a
// nested message changes its length and the length of every message around it), so half of the
// mutations parse the input, change one field through reflection and serialize it again. The
// other half, and every input that does not parse, get libFuzzer's own byte mutations.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <google/protobuf/message.h>
#include <iterator>
#include <memory>
#include <random>
#include <span>
#include <string>

// libFuzzer's mutator, for the parts of a message the structured mutation treats as bytes.
extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

namespace vcpilot::fuzz {

// A number field's new value: one of `interesting` (values next to the limits the code under
// test draws), the old value plus or minus one, or anything.
inline std::uint64_t mutate_number(std::uint64_t value, std::minstd_rand& random,
                                   std::span<const std::uint64_t> interesting) {
    switch (random() % 4) {
        case 0:
            return interesting[random() % interesting.size()];
        case 1:
            return value + 1;
        case 2:
            return value - 1;
        default:
            return (std::uint64_t{random()} << 32) ^ random();
    }
}

// libFuzzer's own byte mutations (and its dictionary) on one string field.
inline std::string mutate_text(std::string text) {
    const std::size_t size = text.size();
    text.resize(std::max<std::size_t>(2 * size, 64));
    text.resize(LLVMFuzzerMutate(reinterpret_cast<std::uint8_t*>(text.data()), size, text.size()));
    return text;
}

// Changes one field of `message` (or of a message inside it). Repeated scalar and string fields
// are left alone (byte mutations still reach them).
inline void mutate_message(google::protobuf::Message& message, std::minstd_rand& random,
                           std::span<const std::uint64_t> interesting) {
    using google::protobuf::FieldDescriptor;
    using google::protobuf::Message;
    const auto* descriptor = message.GetDescriptor();
    const auto* reflection = message.GetReflection();
    if (descriptor->field_count() == 0) {
        return;
    }
    const FieldDescriptor* field = descriptor->field(
        static_cast<int>(random() % static_cast<unsigned>(descriptor->field_count())));
    if (field->is_repeated()) {
        if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
            return;
        }
        const int count = reflection->FieldSize(message, field);
        const auto pick = [&] { return static_cast<int>(random() % static_cast<unsigned>(count)); };
        switch (count == 0 ? 0 : random() % 4) {
            case 0: {  // a new element: a copy of another, so that it gets past the early checks
                Message* added = reflection->AddMessage(&message, field);
                if (count > 0) {
                    added->CopyFrom(reflection->GetRepeatedMessage(message, field, pick()));
                }
                return;
            }
            case 1:
                reflection->SwapElements(&message, field, pick(), count - 1);
                reflection->RemoveLast(&message, field);
                return;
            case 2:
                reflection->SwapElements(&message, field, pick(), pick());
                return;
            default:
                mutate_message(*reflection->MutableRepeatedMessage(&message, field, pick()), random,
                               interesting);
                return;
        }
    }
    switch (field->cpp_type()) {
        case FieldDescriptor::CPPTYPE_STRING:
            reflection->SetString(&message, field,
                                  mutate_text(reflection->GetString(message, field)));
            return;
        case FieldDescriptor::CPPTYPE_UINT32:
            reflection->SetUInt32(&message, field,
                                  static_cast<std::uint32_t>(mutate_number(
                                      reflection->GetUInt32(message, field), random, interesting)));
            return;
        case FieldDescriptor::CPPTYPE_UINT64:
            reflection->SetUInt64(
                &message, field,
                mutate_number(reflection->GetUInt64(message, field), random, interesting));
            return;
        case FieldDescriptor::CPPTYPE_BOOL:
            reflection->SetBool(&message, field, !reflection->GetBool(message, field));
            return;
        case FieldDescriptor::CPPTYPE_ENUM: {
            // Proto3 enums are open: any value parses, so any value is worth trying. Mostly the
            // declared ones, sometimes one just past them or a number from the list.
            const auto* type = field->enum_type();
            const int value =
                random() % 4 == 0
                    ? static_cast<int>(mutate_number(
                          static_cast<std::uint64_t>(reflection->GetEnumValue(message, field)),
                          random, interesting))
                    : type->value(static_cast<int>(random() %
                                                   static_cast<unsigned>(type->value_count())))
                              ->number() +
                          (random() % 8 == 0 ? 1 : 0);
            reflection->SetEnumValue(&message, field, value);
            return;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE:
            if (random() % 8 == 0) {
                reflection->ClearField(&message, field);
            } else {
                mutate_message(*reflection->MutableMessage(&message, field), random, interesting);
            }
            return;
        default:
            return;
    }
}

// The body of LLVMFuzzerCustomMutator for an input of one selector byte and a message of the
// type `request_for(selector)` returns.
template <typename RequestFor>
std::size_t mutate_input(std::uint8_t* data, std::size_t size, std::size_t max_size,
                         unsigned int seed, RequestFor request_for,
                         std::span<const std::uint64_t> interesting) {
    std::minstd_rand random(seed);
    if (size == 0 || max_size < 2 || size - 1 > static_cast<std::size_t>(INT_MAX) ||
        random() % 2 == 0) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    std::unique_ptr<google::protobuf::Message> request = request_for(data[0]);
    if (!request->ParseFromArray(data + 1, static_cast<int>(size - 1))) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    const unsigned rounds = 1 + random() % 3;
    for (unsigned i = 0; i < rounds; ++i) {
        mutate_message(*request, random, interesting);
    }
    std::string body;
    if (!request->SerializeToString(&body) || body.size() > max_size - 1) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    std::memcpy(data + 1, body.data(), body.size());
    return body.size() + 1;
}

}  // namespace vcpilot::fuzz
