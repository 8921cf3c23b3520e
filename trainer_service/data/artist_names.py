"""Readable, deterministic artist names for the synthetic generator ("The Velvet Foxes", "Luna
Parade", "Mara Quinn & the Wolves"), built from word lists without a Python loop per name.

The word lists are pairwise disjoint and single words, so names made by different patterns never
coincide; within a pattern, word combinations are drawn without replacement. Every name is
therefore unique (the generator then duplicates a few on purpose).
"""

from __future__ import annotations

import numpy as np

ADJECTIVES = np.array("""
Velvet Electric Silent Golden Neon Crimson Midnight Wild Hollow Broken Silver Lucky Lonely Burning
Frozen Northern Southern Eastern Western Cosmic Atomic Paper Glass Iron Painted Hidden Secret
Wandering Dancing Falling Rising Sleeping Howling Savage Gentle Tender Bitter Sweet Dusty Rusty
Shiny Faded Distant Little Tiny Mighty Royal Restless Reckless Fearless Careless Endless Hungry
Thirsty Sleepy Happy Lazy Crazy Holy Pale Dark Bright Blue Red Green Black White Purple Scarlet
Amber Ivory Emerald Violet Indigo Magnetic Static Digital Analog Plastic Vintage Modern Ancient
Lost Strange Quiet Loud Heavy Smooth Rough Soft Cold Warm Young Brave Clever Wicked Lovely Gloomy
Sunny Stormy Misty Foggy Snowy Rainy Starry Moonlit Twisted Tangled Shattered Sacred Mystic Lunar
Solar Polar Tropical Urban Feral Gilded Hazy Lucid Velour Satin Copper Chrome Radiant Humble Sly
""".split())

# Singular and plural, aligned.
NOUNS = np.array("""
Fox Wolf Parade Harbor Moon Star River Mountain Ocean Garden Tiger Raven Crow Owl Bear Lion Horse
Whale Shark Dragon Ghost Robot Pilot Sailor Prophet Saint Sinner Thief Knight Queen Prince Witch
Wizard Engine Machine Rocket Comet Planet Satellite Signal Echo Shadow Mirror Window Door Bridge
Tower Castle Palace Temple Forest Desert Island Valley Canyon Meadow Storm Cloud Flower Orchid
Cherry Peach Lemon Diamond Pearl Crystal Feather Arrow Sword Crown Heart Bone Skull Eye Hand Wing
Kid Boy Girl Sister Brother Child Lover Stranger Dreamer Drifter Runner Dancer Singer Drummer Poet
Painter Monk Nomad Pirate Cowboy Astronaut Mermaid Vampire Zombie Angel Demon Cat Dog Rabbit
Sparrow Swan Falcon Eagle Dolphin Bee Moth Butterfly Spider Snake Lizard Frog Panther Jaguar Fire
Flame Ember Spark Wave Tide Wheel Bell Drum Guitar Piano Radio Cassette Balloon Kite Lantern Candle
Letter Postcard Highway Street Avenue City Village Summer Winter Morning Sunday Holiday Circus
Carnival Party Riot Empire Kingdom Army Luna
""".split())
PLURALS = np.array("""
Foxes Wolves Parades Harbors Moons Stars Rivers Mountains Oceans Gardens Tigers Ravens Crows Owls
Bears Lions Horses Whales Sharks Dragons Ghosts Robots Pilots Sailors Prophets Saints Sinners
Thieves Knights Queens Princes Witches Wizards Engines Machines Rockets Comets Planets Satellites
Signals Echoes Shadows Mirrors Windows Doors Bridges Towers Castles Palaces Temples Forests Deserts
Islands Valleys Canyons Meadows Storms Clouds Flowers Orchids Cherries Peaches Lemons Diamonds
Pearls Crystals Feathers Arrows Swords Crowns Hearts Bones Skulls Eyes Hands Wings Kids Boys Girls
Sisters Brothers Children Lovers Strangers Dreamers Drifters Runners Dancers Singers Drummers Poets
Painters Monks Nomads Pirates Cowboys Astronauts Mermaids Vampires Zombies Angels Demons Cats Dogs
Rabbits Sparrows Swans Falcons Eagles Dolphins Bees Moths Butterflies Spiders Snakes Lizards Frogs
Panthers Jaguars Fires Flames Embers Sparks Waves Tides Wheels Bells Drums Guitars Pianos Radios
Cassettes Balloons Kites Lanterns Candles Letters Postcards Highways Streets Avenues Cities Villages
Summers Winters Mornings Sundays Holidays Circuses Carnivals Parties Riots Empires Kingdoms Armies
Lunas
""".split())

FIRST_NAMES = np.array("""
Mara Leo Nina Otis Iris Felix Hazel Jonah Clara Milo Ada Hugo Elsa Ezra Greta Silas Maeve Arlo Vera
Caleb June Theo Nora Jasper Ivy Ruben Wren Emil Thea Oscar Lena Tobias Ingrid Elliot Mabel Rufus
Sadie Anton Esme Luca Pearla Dmitri Yara Kenji Amara Soren Leila Mateo Noor Ravi Ines Bruno Alma
Marcus Tess Idris Freya Dario Olive Kofi Zara Nils Celia Omar Sabine Levi Rosa Victor Delia Jude
Alba Quentin Nadia Malik Talia Boris Cosima Lionel Petra Gideon Sylvie Rocco Annika Cyrus Lotte
Ansel Marisol Hector Ottilie Ivo Paloma Lars Beatrix Nico Solveig Amos Renata Tariq Elodie
""".split())
LAST_NAMES = np.array("""
Quinn Harlow Varga Okafor Lindqvist Moreau Castellano Byrne Novak Achebe Sorensen Delacroix Tanaka
Whitfield Rourke Haddad Kowalski Ferreira Ashby Lindgren Mbeki Caruso Holloway Ibarra Yilmaz Duval
Petrov Galloway Nakamura Oyelaran Brandt Kavanagh Medina Strand Okonkwo Vasquez Thornton Keller
Andersen Romano Calloway Szabo Abara Fontaine Mercer Hargreaves Lozano Eriksen Adeyemi Bellamy
Kruger Monroe Sato Valdez Whitaker Aguilar Lachance Nyberg Osei Prescott Rinaldi Sheridan Takeda
Vance Winslow Yamada Zubiri Blackwood Cortez Dunmore Escobar Fairchild Gallagher Hensley Ishikawa
Jovanovic Kincaid Larkin Marchetti Navarro Oakley Pemberton Quintero Rasmussen Sinclair Trevino
Underwood Vickers Wainwright Alvarado Bertrand Chandler Devereux Ellington Fitzroy Granger
""".split())

SUFFIXES = np.array(["Orchestra", "Collective", "Trio", "Quartet", "Project", "Experience", "Ensemble",
                     "Band", "Club", "Choir", "Revue", "Syndicate"])

_A, _N, _F, _L, _S = ADJECTIVES.size, NOUNS.size, FIRST_NAMES.size, LAST_NAMES.size, SUFFIXES.size


def _the_adjective_plurals(i):  # "The Velvet Foxes"
    return "The " + ADJECTIVES[i // _N] + " " + PLURALS[i % _N]


def _adjective_noun(i):  # "Golden Harbor"
    return ADJECTIVES[i // _N] + " " + NOUNS[i % _N]


def _first_last(i):  # "Mara Quinn"
    return FIRST_NAMES[i // _L] + " " + LAST_NAMES[i % _L]


def _noun_noun(i):  # "Luna Parade" (two different nouns)
    first, second = i // (_N - 1), i % (_N - 1)
    second = second + (second >= first)
    return NOUNS[first] + " " + NOUNS[second]


def _first_and_the_plurals(i):  # "Otis & the Comets"
    return FIRST_NAMES[i // _N] + " & the " + PLURALS[i % _N]


def _adjective_noun_suffix(i):  # "Electric Harbor Orchestra"
    return ADJECTIVES[i // (_N * _S)] + " " + NOUNS[(i // _S) % _N] + " " + SUFFIXES[i % _S]


def _the_noun_plurals(i):  # "The Moon Wolves" (two different nouns)
    first, second = i // (_N - 1), i % (_N - 1)
    second = second + (second >= first)
    return "The " + NOUNS[first] + " " + PLURALS[second]


def _full_name_and_the(i):  # "Mara Quinn & the Silent Comets"
    person, band = i // (_A * _N), i % (_A * _N)
    return (FIRST_NAMES[person // _L] + " " + LAST_NAMES[person % _L] + " & the " + ADJECTIVES[band // _N]
            + " " + PLURALS[band % _N])


# (pattern, number of distinct names it can make, share of the names it gets when it has room)
_PATTERNS = (
    (_the_adjective_plurals, _A * _N, 0.16),
    (_adjective_noun, _A * _N, 0.14),
    (_first_last, _F * _L, 0.18),
    (_noun_noun, _N * (_N - 1), 0.10),
    (_first_and_the_plurals, _F * _N, 0.10),
    (_adjective_noun_suffix, _A * _N * _S, 0.12),
    (_the_noun_plurals, _N * (_N - 1), 0.10),
    (_full_name_and_the, _F * _L * _A * _N, 0.10),  # last: takes whatever the others had no room for
)


def unique_artist_names(count: int, rng: np.random.Generator) -> np.ndarray:
    """(count,) unicode: distinct readable names in random order, deterministic given ``rng``'s
    state. Each pattern fills at most half its combinations (so names stay varied); the last,
    with about 10^9 combinations, takes the rest."""
    quotas = []
    left = count
    for index, (_, capacity, share) in enumerate(_PATTERNS):
        quota = left if index == len(_PATTERNS) - 1 else min(int(round(share * count)), capacity // 2, left)
        quotas.append(quota)
        left -= quota
    parts = [pattern(rng.choice(capacity, size=quota, replace=False))
             for (pattern, capacity, _), quota in zip(_PATTERNS, quotas) if quota]
    names = np.concatenate(parts) if parts else np.array([], dtype=str)
    return names[rng.permutation(count)]
