// suggest.h — "did you mean": the candidate closest to a mistyped word, for the CLI's errors.
#pragma once

#include <string>
#include <vector>

namespace sf::cli {

// The candidate with the smallest edit distance (insertions, deletions, substitutions and
// transpositions of adjacent characters) to `word`, when that distance is at most a third of
// the longer word's length (at least 2), or when one of the two begins the other (4 characters
// or more: --temperature and --temp); "" when none is that close.
std::string nearest_word(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace sf::cli
