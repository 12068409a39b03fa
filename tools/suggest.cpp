// suggest.cpp — edit distance and the nearest candidate.
#include "suggest.h"

#include <algorithm>

namespace sf::cli {

namespace {

// Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a substring).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

}  // namespace

std::string nearest_word(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 0;
  for (const std::string& c : candidates) {
    // A word that one of them begins (--temperature for --temp) counts as one edit away.
    const bool prefix = std::min(word.size(), c.size()) >= 4 &&
                        (word.rfind(c, 0) == 0 || c.rfind(word, 0) == 0);
    const size_t distance = prefix ? 1 : edit_distance(word, c);
    const size_t limit = std::max<size_t>(2, std::max(word.size(), c.size()) / 3);
    if (distance <= limit && (best.empty() || distance < best_distance)) {
      best = c;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace sf::cli
