"""Build training sets of photographs from Debian packages, every file credited (docs/quality.md).

    python bench/debian_photos.py DEST [--set study|wide] [--permissive] [--size 384] [--exclude DIR]

``--set study`` (the default) is the 25-photo training set of the quality study (run D31_S350): the photographs of
three Debian wallpaper packages listed in ``PHOTOS`` (the packages also hold drawings and abstract art). Add the six
bundled sample photos (``nst_fast/assets/content``) for the 31 of the study, then train with ``data.root=DEST``.
``--set wide`` adds the 150 photos of ``WIDE_TABLE`` from four more packages, at pinned versions so that the set is
the same wherever it is built (175 in all): GCompris's activity pictures (inside Qt resource bundles, read by
``rcc_index`` and ``rcc_read``), LXQt's and Budgie's wallpapers and Palapeli's puzzle photos. ``--permissive`` keeps
only public-domain, CC0 and CC-BY-* photos, leaving out CC-BY-SA, GPL and GFDL ones: a set that can be shipped with
its credits alone.

Each package comes from ``apt-get download`` (a Debian or Ubuntu machine; no root needed), first with this machine's
package lists, then, for a pinned version they lack, with a private apt configuration for the Debian suite that has
it, in a temporary folder: its own sources.list, lists and cache, nothing of the system's changed (budgie-backgrounds
is in trixie only; Debian's archive keyring must know the suite). Each photo is scaled to ``--size`` pixels on its
shorter side (one smaller than that is skipped, with a message) and written as JPEG into ``DEST`` with
``CREDITS.md``: file, author, licence, package and version, member and source link, as the packages' copyright and
licence files state them.

The held-out photos (``../shared/photos``, from ``plasma-workspace-wallpapers``) are not among them: never train on
those. ``--exclude ../shared/photos`` checks it: it leaves out any photo whose 16x16 greyscale thumbnail, brightness
and contrast normalised, is within ``NEAR_DUPLICATE`` (0.1 standard deviations, mean absolute difference) of one in
that folder; the held-out photos score 0.006-0.033 against their originals in plasma-workspace-wallpapers, and the
nearest unrelated photo of the wide set 0.34.

Exit status: 0 when every photo of the set was written or deliberately left out (``--permissive``, smaller than
``--size``, ``--exclude``); 2 when some package or file could not be fetched or read (a message names each and says
why; the others are written and credited, so the folder is usable but not the whole set); 1 when none was written.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

#: package -> {file inside /usr/share/backgrounds: (photographer, licence)}, from each package's copyright file.
PHOTOS: dict[str, dict[str, tuple[str, str]]] = {
    "lomiri-wallpapers-16.04": {
        "aitzgorri_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Bridge_by_Sander_Klootwijk.jpg": ("Sander Klootwijk", "CC-BY-SA-4.0"),
        "Dragonfly_by_Bolly.jpg": ("Bolly", "CC-BY-SA-4.0"),
        "free_by_Peter_Nerlich.jpg": ("Peter Nerlich", "CC-BY-SA-4.0"),
        "friends_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "life_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "picosdeeuropa_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Picture_0B_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
        "Picture_1A_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
        "seeding_by_Clements_Engelhardt.jpg": ("Clemens Engelhardt", "CC0-1.0"),
        "sunset_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Wine_by_Jakkub_Mede.jpg": ("Jakub Mede", "CC-BY-4.0"),
    },
    "lomiri-wallpapers-20.04": {
        "Kleiber_by_Lukas_Baubkus.jpg": ("Lukas Baubkus", "CC-BY-SA-3.0"),
    },
    "mate-backgrounds": {
        "mate/nature/Aqua.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/Blinds.jpg": ("Lennart Poettering", "GPL-2+"),
        "mate/nature/Dune.jpg": ("Marco Cogoni", "GPL-2+"),
        "mate/nature/FreshFlower.jpg": ("Jens Ansorg", "GPL-2+"),
        "mate/nature/Garden.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/GreenMeadow.jpg": ("Timothy Schellhase", "GPL-2+"),
        "mate/nature/LadyBird.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/RainDrops.jpg": ("blackcombwhistler07", "GPL-2+"),
        "mate/nature/Storm.jpg": ("Sergey Nazarov", "GPL-2+"),
        "mate/nature/TwoWings.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/Wood.jpg": ("Jean-François Fortin Tam", "GPL-2+"),
        "mate/nature/YellowFlower.jpg": ("Charles Barbin", "GPL-2+"),
    },
}

#: Where the ``PHOTOS`` members lie inside their packages.
STUDY_FOLDER = "/usr/share/backgrounds"


class Credit(NamedTuple):
    """Who made a photo, under which licence, and where it came from (blank where the package names no source)."""

    author: str
    licence: str
    link: str = ""


#: The photos ``--set wide`` adds, one a line: package | member (its path inside the package; ``BUNDLE.rcc:/PATH`` for
#: a file inside a Qt resource bundle) | author | licence | source. From the licence notes beside each photo:
#: GCompris's per-folder README files inside the bundles (its ``details`` pictures are its own edits of the photos
#: named), lxqt-themes' ``wallpapers/License``, Palapeli's puzzle ``.desktop`` files and budgie-backgrounds'
#: ``debian/copyright`` (``Files: *``, CC0-1.0, no credit per file).
WIDE_TABLE = """\
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/alpaca.webp | Dietmar Rabich / Wikimedia Commons | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:D%C3%BClmen,_B%C3%B6rnste,_Alpakas_--_2020_--_5338.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/bee.webp | aussiegall | CC-BY-2.0 | https://commons.wikimedia.org/wiki/File:Pollinationn.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/butterfly.webp | © 2014 Jee & Rani Nature Photography | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Parantica_aglea_at_Nayikayam_Thattu.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/calf.webp | Basile Morin | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Close-up_photograph_of_a_calf%27s_head_looking_at_the_viewer_with_pricked_ears_in_Don_Det_Laos.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/camels.webp | Alexandr frolov | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Camelus_bactrianus_in_western_Mongolia_02.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/caterpillar.webp | Ivar Leidus | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Papilio_machaon_-_Daucus_carota_-_Keila.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/chamaeleon.webp | Benny Trapp | CC-BY-3.0 | https://commons.wikimedia.org/wiki/File:BennyTrapp_Chamaeleo_chamaeleon_Samos_Griechenland.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/cheetah.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Cheetah_(Acinonyx_jubatus)_female_2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/crab.webp | Nosferattus | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Sally_Lightfoot_Crab_2019.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/dolphin.webp | טל שמע | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Eilat_Dolphin_Reef_(3).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/flying_fox.webp | Andrew Mercer | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Grey_headed_flying_fox_-_AndrewMercer_IMG41848.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/gibbon.webp | JJ Harrison | CC-BY-3.0 | https://commons.wikimedia.org/wiki/File:Hylobates_lar_-_Kaeng_Krachan_WB.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/giraffe.webp | Sergio Cambelo | public-domain | https://commons.wikimedia.org/wiki/File:Giraffe.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/goat.webp | JoachimKohlerBremen | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Walliser_Schwarzhalsziege,_Belalp_2014.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/gorilla.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Mountain_gorilla_(Gorilla_beringei_beringei)_female_2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/gosling.webp | Stephan Sprinz | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Graugans-G%C3%B6ssel_(anser_anser)_im_Naturschutzgebiet_Wagbachniederung.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/heron.webp | Stephan Sprinz | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Purpurreiher_(ardea_purpurea)_im_Flug_-_NSG_Wagbachniederung_1.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/horse.webp | Eatcha | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Zaniskari_Horse_in_Ladakh.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/kingfisher.webp | Frank-2.0 | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Eisvogel_kingfisher.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/kitten.webp | GalgenTX | CC-BY-2.0 | https://commons.wikimedia.org/wiki/File:A_posing_kitten_(Flickr).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/long_nosed_monkey.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Proboscis_monkey_(Nasalis_larvatus)_female_and_baby.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/macaque.webp | PJeganathan | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Bonnet_macaques_in_anaimalai_hills_JEG2730.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/meerkats.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Meerkat_(Suricata_suricatta)_Tswalu.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/northern_harrier.webp | Frank Schulenburg | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Female_northern_harrier_in_flight-1142.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/nubian_ibex.webp | Rhododendrites | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Juvenile_Nubian_ibex_in_Mitzpe_Ramon_(40409).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/penguin.webp | Gordon Leggett / Wikimedia Commons | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:2019-03-03_Chinstrap_penguin_on_Barrientos_Island,_Antarctica.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/pika.webp | NPS Climate Change Response | public-domain | https://www.flickr.com/photos/npsclimatechange/23072904076/
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/red_panda.webp | Mathias Appel | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Red_Panda_(30324056733).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/rhinoceros.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Indian_rhinoceros_(Rhinoceros_unicornis)_4.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/spoonbills.webp | Ryzhkov Sergey | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:%D0%9A%D0%BE%D1%81%D0%B0%D1%80%D1%96_%D0%B2_%D0%B4%D0%B5%D0%BB%D1%8C%D1%82%D1%96_%D0%94%D1%83%D0%BD%D0%B0%D1%8E.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/squirrel.webp | Роман Наумов | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:%D0%91%D1%96%D0%BB%D0%BA%D0%B0_%D0%BD%D0%B0_%D0%B4%D0%B5%D1%80%D0%B5%D0%B2%D1%96_%D0%B2_%D0%B4%D0%B5%D0%BD%D0%B4%D1%80%D0%BE%D0%BF%D0%B0%D1%80%D0%BA%D1%83_%D0%9E%D0%BB%D0%B5%D0%BA%D1%81%D0%B0%D0%BD%D0%B4%D1%80%D1%96%D1%8F.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/swans.webp | Charles J. Sharp | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Mute_swans_(Cygnus_olor)_and_cygnets.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/toucan.webp | LG Nyqvist | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Pteroglossus_torquatus_Costa_Rica.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/egypt/bentPyramid.webp | Neithsabes | public-domain | https://commons.wikimedia.org/wiki/File:Pyramide_rhomboidale_01.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/egypt/greatPyramidOfGiza.webp | Gary Todd | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Giza_Great_Pyramid_of_Khufu_(9793952173).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/egypt/meidumPyramid.webp | Neithsabes | public-domain | https://commons.wikimedia.org/wiki/File:Meidoum_pyramide_006.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/arlesAmphitheater.webp | (WT-fr) OT Arles | public-domain | https://commons.wikimedia.org/wiki/File:Arenes_arles.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/chateaudeChambord.webp | BjörnT | public-domain | https://commons.wikimedia.org/wiki/File:Chambord_Frontansicht.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/chateaudeChenonceau.webp | Alf van Beem | public-domain | https://commons.wikimedia.org/wiki/File:Ch%C3%A2teau_de_Chenonceau_photo_1.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/citedeCarcassonne.webp | Petitemontagnedujura | public-domain | https://commons.wikimedia.org/wiki/File:Carcassonne_-_la_Cit%C3%A9.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/eiffelTower.webp | Tognopop | public-domain | https://commons.wikimedia.org/wiki/File:Eiffel_Tower_20051010.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/montStMichel.webp | Ali Sabbagh | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Mont_Saint-Michel_IMG_5109_(48875955288).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/palaisdesPapes.webp | Tognopop | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Main_entrance_of_the_Palais_des_Papes_-_20050823.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/pontduGard.webp | Mimova | public-domain | https://commons.wikimedia.org/wiki/File:Pontdugard.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/reimsCathedral.webp | Mattana | public-domain | https://commons.wikimedia.org/wiki/File:Reims_Cathedrale_Notre_Dame_002_chevet.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/france/rocamadour.webp | François Darras | public-domain | https://commons.wikimedia.org/wiki/File:Rocamadour_fda.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/berlinCathedral.webp | Gary Todd | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Berlin_Cathedral_(28668994926).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/brandenburgGate.webp | Evans1551 | public-domain | https://commons.wikimedia.org/wiki/File:Brandenburg_Gate_(summer_2005).JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/neuschwansteinCastle.webp | cameralends | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Neuschwanstein_Castle_(532850).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/schwerinPalace.webp | Hermann Luyken | CC0-1.0 | https://commons.wikimedia.org/wiki/File:2012.02.26.121724_Schloss_Schwerin.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/trierImperialBaths.webp | Berthold Werner | public-domain | https://commons.wikimedia.org/wiki/File:Trier_Kaiserthermen_BW_1.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/germany/wormsCathedral.webp | Immanuel Giel | public-domain | https://commons.wikimedia.org/wiki/File:Dommodell_Worms_04.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/ajantaCave.webp | Jonathanawhite | public-domain | https://commons.wikimedia.org/wiki/File:Aurangabad_-_Ajanta_Caves_(32).JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/charminar.webp | Goutamkhandelwal | public-domain | https://commons.wikimedia.org/wiki/File:Charminar_1.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/gatewayofIndia.webp | Simon Steinberger | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Gateway-of-India.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/goldenTemple.webp | Jasdeep Singh | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Golden_Temple_.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/greatStupa.webp | ArnoldBetten | public-domain | https://commons.wikimedia.org/wiki/File:Sanchi_Stupa_1_(1999).JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/hawaMahal.webp | Janwiki | public-domain | https://commons.wikimedia.org/wiki/File:Hawa_Mahal,_Jaipur,_India.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/konarkSunTemple.webp | Tetraktys | public-domain | https://commons.wikimedia.org/wiki/File:Konark_Sun_Temple_Front_view.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/mysorePalace.webp | Shiva sg | public-domain | https://commons.wikimedia.org/wiki/File:Mysore_Palace_2006.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/qutubMinar.webp | pramadas | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Qutubmin.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/rangGhar.webp | Porikolpok Oxom | public-domain | https://commons.wikimedia.org/wiki/File:Rangghar_Assam.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/victoriaMemorial.webp | Anourag | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Victoria_Memorial_Calcutta.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/canyondeChelly.webp | Nikater | public-domain | https://commons.wikimedia.org/wiki/File:Canyon_de_chelly09.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/castillodeSanMarcos.webp | National Park Service | public-domain | https://commons.wikimedia.org/wiki/File:Castillo_de_San_Marcos.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/castleClinton.webp | Jack E. Boucher, National Park Service | public-domain | https://commons.wikimedia.org/wiki/File:Castle_Clinton_National_Monument_in_Battery_Park_-_New_York_City_-_Areal_view_-_1961.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/fortSumter.webp | Gary Todd | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Fort_Sumter,_South_Carolina_(12583090893).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/georgeWashingtonBirthplace.webp | National Park Service | public-domain | https://commons.wikimedia.org/wiki/File:George_Washington_Birthplace_National_Monument,_Virginia_(e1c27488-14f6-4478-ab87-d36af60e34d3).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/lincolnMemorial.webp | Brylie Christopher Oxley | CC0-1.0 | https://commons.wikimedia.org/wiki/File:US-WashingtonDC-LincolnMemorial-20140312_014138_HDR_v1.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/mountRushmore.webp | Eekim | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Mount_Rushmore,_Keystone,_South_Dakota.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/navajo.webp | Jon Sullivan | public-domain | https://commons.wikimedia.org/wiki/File:Betatakin_Cliff_Dwellings.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/usa/statueofLiberty.webp | (WT-shared) Ypsilonatshared | public-domain | https://commons.wikimedia.org/wiki/File:Liberty_enlightening_the_world.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/chichenItza.webp | Daniel Schwen | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Chichen_Itza_3.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/christTheRedeemer.webp | Chensiyuan | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:1_cristor_redentor_2014.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/colosseum.webp | Urse Ovidiu | public-domain | https://commons.wikimedia.org/wiki/File:Colosseum_Roma_2009.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/greatWallofChina.webp | Nicolas Perrault III | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Great_Wall_of_China_July_2006.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/machuPicchu.webp | Guillaume Pascal | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Yet_another_pic_of_machu_picchu.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/petra.webp | Berthold Werner | public-domain | https://commons.wikimedia.org/wiki/File:Petra_Jordan_BW_36.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/wonders/tajMahal.webp | Yann | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Taj_Mahal,_Agra,_India.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/bison.webp | Kurt Kaiser | CC0-1.0 | https://commons.wikimedia.org/wiki/File:American_Bison_9.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/chameleon.webp | Nilesh1104 | public-domain | https://commons.wikimedia.org/wiki/File:GARDEN_CHAMELEON.jpeg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/crocodile.webp | Djambalawa | public-domain | https://commons.wikimedia.org/wiki/File:Saltwater_Crocodile_on_a_river_bank_(cropped).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/dragon.webp | TimVickers | public-domain | https://commons.wikimedia.org/wiki/File:Varanus_komodoensis_(5).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/giraffe.webp | Mike and Lara Wolfe | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Giraffe_courtship_(25657342808).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/hedgehog.webp | George Chernilevsky | public-domain | https://commons.wikimedia.org/wiki/File:Erinaceus_roumanicus_2020_G2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/jaguar.webp | Frieda Bredesen | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Two_Jaguar_Sisters.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/kangaroo.webp | Vicki Nunn | public-domain | https://commons.wikimedia.org/wiki/File:Eastern_Grey_Kangaroo_%26_Joey2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/koala.webp | BurningWell | public-domain | https://commons.wikimedia.org/wiki/File:Koala_Perth_Zoo.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/lemur.webp | Mathias Appel | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Lemur_(37122852696).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/moose.webp | Ryan Hagerty | public-domain | https://commons.wikimedia.org/wiki/File:Male_Moose.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/narwhal.webp | Dr Kristin Laidre | public-domain | https://commons.wikimedia.org/wiki/File:Pod_Monodon_monoceros.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/panda.webp | Jeff Kubina | public-domain | https://commons.wikimedia.org/wiki/File:Giant_Panda_2004-03-2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/polar_bear.webp | anonymous | public-domain | https://commons.wikimedia.org/wiki/File:Churchill_Wildlife_Management_Area_polar_bear30.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_animals.rcc:/gcompris/src/activities/explore_world_animals/resource/animals/scarlet_macaw.webp | Dcoetzee | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Scarlet_macaw_at_Cougar_Mountain_Zoological_Park.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/cat.webp | Loliloli | public-domain | https://commons.wikimedia.org/wiki/File:Spielendes_K%C3%A4tzchen.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/chicken.webp | Tranquilles | public-domain | https://commons.wikimedia.org/wiki/File:Chickens_at_Tranquilles_B%26B.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/cow.webp | Dohduhdah | public-domain | https://commons.wikimedia.org/wiki/File:Cow-IMG_2050.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/dog.webp | Hans Kemperman | public-domain | https://commons.wikimedia.org/wiki/File:German-shepherd-4040871920._(2).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/horse.webp | Seth Zeigler | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Nokota_Horse_Stud_Band.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/pig.webp | Teinesavaii | public-domain | https://commons.wikimedia.org/wiki/File:Pig_1,_Savaii,_Samoa.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/sheep.webp | Rob Mitchell | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Sheep_(33625876592).jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/africa.webp | Kenneth Ritchards | public-domain | https://commons.wikimedia.org/wiki/File:Bata_drums.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/america.webp | Tom Harpel | CC-BY-2.0 | https://commons.wikimedia.org/wiki/File:Onalaska-Practice6.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/australia.webp | Steve Evans | CC-BY-2.0 | https://commons.wikimedia.org/wiki/File:Australia_Aboriginal_Culture_009.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/ireland.webp | candyschwartz | CC-BY-2.0 | https://commons.wikimedia.org/wiki/File:Lunny_irvine_o_flynn_glackin.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/italy.webp | SoriamuséuM | CC0-1.0 | https://commons.wikimedia.org/wiki/File:%C3%93pera_c%C3%A1sina.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/japan.webp | takami torao | public-domain | https://commons.wikimedia.org/wiki/File:Agidaiko03.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/mexico.webp | Elidealista | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Wikipedia_10_Guadalajara_-_Mariachi.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/orchestra.webp | ABC Informática | public-domain | https://commons.wikimedia.org/wiki/File:Orchestra_of_the_18th_Century.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea1.webp | Ruthven | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Parco_archeologico_di_Baia_-_via_herculanea_2.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea2.webp | Ruthven | CC0-1.0 | https://commons.wikimedia.org/wiki/File:Parco_archeologico_di_Baia_-_portus_Julius_4.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea3.webp | SolarSurfer | public-domain | https://commons.wikimedia.org/wiki/File:Finding_Nemo_Porthole.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea4.webp | Pseudopanax | public-domain | https://commons.wikimedia.org/wiki/File:Black_coral_at_Milford_Sound_Underwater_Observatory.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea5.webp | Rita Segantini | public-domain | https://commons.wikimedia.org/wiki/File:DSCN1716.JPG
gcompris-qt-data | /usr/share/gcompris-qt/rcc/clickgame.rcc:/gcompris/src/activities/clickgame/resource/sea6.webp | U.S. Fish and Wildlife Service | public-domain | https://commons.wikimedia.org/wiki/File:Basket_starfish_underwater_astrophyton_muriatum.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/details.rcc:/gcompris/src/activities/details/resource/image/EgeskovSlotSpejling_background.webp | Bruno Coudoin and others, after Malene Thyssen | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Egeskov_Slot_spejling.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/details.rcc:/gcompris/src/activities/details/resource/image/EilanDonanCastle_background.webp | Bruno Coudoin and others, after Guillaume Piolle | CC-BY-4.0 | https://commons.wikimedia.org/wiki/File:Eilean_Donan_castle_-_95mm.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/details.rcc:/gcompris/src/activities/details/resource/image/GizahPyramids_background.webp | Bruno Coudoin and others, after Ricardo Liberato | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Pyramids_at_Gizah.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/details.rcc:/gcompris/src/activities/details/resource/image/Neuschwanstein_background.webp | Bruno Coudoin and others, after Softeis | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Castle_Neuschwanstein.jpg
gcompris-qt-data | /usr/share/gcompris-qt/rcc/details.rcc:/gcompris/src/activities/details/resource/image/TajMahal_background.webp | Bruno Coudoin and others, after Dhirad | CC-BY-SA-4.0 | https://commons.wikimedia.org/wiki/File:Taj_Mahal_in_March_2004.jpg
lxqt-themes | /usr/share/lxqt/wallpapers/after-the-rain.jpg | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/appleflower.png | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/beam.png | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/butterfly.png | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/drop.png | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/flowers.png | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/fog.jpg | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/this-is-not-windows.jpg | stefonarch | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/Butterfly-Kenneth-Wimer.jpg | Kenneth Wimer | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/Valendas.png | LXQt Project Team | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
lxqt-themes | /usr/share/lxqt/wallpapers/cloud.png | LXQt Project Team | CC-BY-SA-3.0 | https://github.com/lxqt/lxqt-themes
palapeli-data | /usr/share/palapeli/collection/castle-maintenon.jpg | Eric Pouhier | GFDL | http://commons.wikimedia.org/wiki/Image:EPO_2432_wiki.jpg
palapeli-data | /usr/share/palapeli/collection/cincinnati-bridge.jpg | Derek Jensen | public-domain | http://commons.wikimedia.org/wiki/Image:Cincinnati-roebling-suspension-bridge.jpg
palapeli-data | /usr/share/palapeli/collection/citrus-fruits.jpg | US Department of Agriculture | public-domain | http://commons.wikimedia.org/wiki/Image:Citrus_fruits.jpg
palapeli-data | /usr/share/palapeli/collection/european-honey-bee.jpg | John Severns | public-domain | http://commons.wikimedia.org/wiki/Image:European_honey_bee_extracts_nectar.jpg
palapeli-data | /usr/share/palapeli/collection/panther-chameleon-female.jpg | B. Navez and others | GFDL | http://commons.wikimedia.org/wiki/Image:FurciferPardalisFemale.JPG
budgie-backgrounds | /usr/share/backgrounds/budgie/abstract-spiral.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/beacon-street-sunset.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/blue-periwinkle.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/canyon-wren.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/casa-mila.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/extreme-desert-hike.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/high-trestle-trail.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/lake-sherburne.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/oakland-zoo-otters.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/perched-osprey.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/piazza-gae-aulenti.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/roman-colosseum.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/singaporean-cityscape.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
budgie-backgrounds | /usr/share/backgrounds/budgie/tea-gardens.jpg | Budgie Desktop Developers | CC0-1.0 | https://github.com/buddiesofbudgie/budgie-backgrounds
"""


def parse_table(table: str) -> dict[str, dict[str, Credit]]:
    """``WIDE_TABLE`` as package -> {member: credit}, the shape of ``PHOTOS``."""
    photos: dict[str, dict[str, Credit]] = {}
    for line in table.splitlines():
        package, member, author, licence, link = (field.strip() for field in line.split(" | "))
        photos.setdefault(package, {})[member] = Credit(author, licence, link)
    return photos


WIDE_PHOTOS = parse_table(WIDE_TABLE)


@dataclass(frozen=True)
class Package:
    """How to fetch one package. ``version`` pins it (None: whichever apt offers, as the study set always took);
    ``suite`` is the Debian suite that has that version, for a machine whose package lists lack it; ``prefix`` starts
    the names of its photos, to keep names unique across packages."""

    version: str | None = None
    suite: str | None = None
    prefix: str = ""


PACKAGES: dict[str, Package] = {
    "lomiri-wallpapers-16.04": Package(),
    "lomiri-wallpapers-20.04": Package(),
    "mate-backgrounds": Package(),
    "gcompris-qt-data": Package("3.1-2", "bookworm", "gcompris"),
    "lxqt-themes": Package("1.2.0-1", "bookworm", "lxqt"),
    "palapeli-data": Package("4:22.12.3-1", "bookworm", "palapeli"),
    "budgie-backgrounds": Package("3.0-1", "trixie", "budgie"),
}

#: Licences that let a set be shipped with credits alone: public domain, CC0 and CC-BY (no share-alike,
#: non-commercial or no-derivatives clause). CC-BY-SA, GPL, LGPL and GFDL bind what is built from the photos.
PERMISSIVE = re.compile(r"public-domain|CC0-1\.0|CC-BY-\d\.\d")

#: Largest thumbnail distance (``distance``) at which ``--exclude`` takes a photo for a copy of one in its folder.
NEAR_DUPLICATE = 0.1

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class Photo(NamedTuple):
    """One photo to build: where it lies (package, path inside it), its output file name and its credit."""

    package: str
    member: str
    name: str
    credit: Credit


def output_name(member: str, prefix: str = "") -> str:
    """``Bridge_by_Sander_Klootwijk.jpg`` -> ``bridge_by_sander_klootwijk.jpg``; after ``prefix`` and, for a file in a
    Qt bundle, the bundle's name: ``…/erase.rcc:/…/alpaca.webp`` with ``gcompris`` -> ``gcompris_erase_alpaca.jpg``."""
    bundle, _, inner = member.rpartition(".rcc:")
    words = "_".join(word for word in (prefix, Path(bundle).name, Path(inner).stem) if word)
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_") + ".jpg"


def select(photo_set: str, permissive: bool = False) -> list[Photo]:
    """The photos of ``photo_set`` (``study`` or ``wide``), only the permissively licensed ones if asked."""
    photos = [
        Photo(package, f"{STUDY_FOLDER}/{member}", output_name(member), Credit(*credit))
        for package, members in PHOTOS.items()
        for member, credit in members.items()
    ]
    if photo_set == "wide":
        photos += [
            Photo(package, member, output_name(member, PACKAGES[package].prefix), credit)
            for package, members in WIDE_PHOTOS.items()
            for member, credit in members.items()
        ]
    elif photo_set != "study":
        raise ValueError(f"unknown photo set {photo_set!r}: choose study or wide")
    names = [photo.name for photo in photos]
    if len(set(names)) != len(names):
        raise ValueError(f"two photos would share a file name: {sorted({n for n in names if names.count(n) > 1})}")
    return [photo for photo in photos if not permissive or PERMISSIVE.fullmatch(photo.credit.licence)]


class RccError(ValueError):
    """A Qt resource bundle, or a file in one, that ``rcc_index``/``rcc_read`` cannot read; the message says why."""


class RccEntry(NamedTuple):
    """A file in a Qt resource bundle: its flags (``RCC_*``) and where its data record starts in the bundle."""

    flags: int
    offset: int


RCC_ZLIB, RCC_DIRECTORY, RCC_ZSTD = 1, 2, 4


def rcc_index(bundle: bytes) -> dict[str, RccEntry]:
    """The files of a Qt resource bundle (``.rcc``, as ``rcc --binary`` writes it) by path, e.g. ``/gcompris/x.webp``.

    The format (Qt's ``rcc.cpp``; numbers big-endian): ``qres``, the format version (u32), the offsets of the tree,
    the data and the names (u32 each; version 3 adds u32 flags). The tree is an array of entries of 14 bytes (22 from
    version 2, which appends a u64 modification time), entry 0 the root directory: name offset (u32), flags (u16:
    ``RCC_ZLIB``, ``RCC_DIRECTORY``, ``RCC_ZSTD``), then for a directory its child count and its first child's index
    (u32 each), for a file its country and language (u16 each) and its data offset (u32). A name is its length in
    UTF-16 units (u16), a hash (u32) and UTF-16BE text; a data record is a length (u32) and that many bytes.
    """
    if bundle[:4] != b"qres":
        raise RccError("not a Qt resource bundle: it does not start with 'qres'")
    try:
        version, tree, data, names = struct.unpack_from(">IIII", bundle, 4)
        if version not in (1, 2, 3):
            raise RccError(f"format version {version}; this reader knows versions 1 to 3")
        entry_size = 14 if version == 1 else 22

        def name(offset: int) -> str:
            (length,) = struct.unpack_from(">H", bundle, names + offset)
            start = names + offset + 6
            return bundle[start : start + 2 * length].decode("utf-16-be")

        files: dict[str, RccEntry] = {}
        pending = [(0, "")]
        while pending:
            index, parent = pending.pop()
            at = tree + index * entry_size
            name_offset, flags = struct.unpack_from(">IH", bundle, at)
            path = f"{parent}/{name(name_offset)}" if index else ""
            if flags & RCC_DIRECTORY:
                count, first = struct.unpack_from(">II", bundle, at + 6)
                pending.extend((child, path) for child in range(first, first + count) if child > index)
            else:
                (offset,) = struct.unpack_from(">I", bundle, at + 10)
                files[path] = RccEntry(flags, data + offset)
    except (struct.error, UnicodeDecodeError) as error:
        raise RccError(f"truncated or corrupt bundle ({error})") from error
    return files


def rcc_read(bundle: bytes, entry: RccEntry) -> bytes:
    """The bytes of one file of ``rcc_index``, decompressed: a zlib entry is ``qCompress`` output, its uncompressed
    length (u32) and a zlib stream. A zstd entry (Qt 6's rcc writes them when built with zstd) raises ``RccError``:
    Python 3.11's standard library has no zstd, and none of the bundles this script reads needs it."""
    (length,) = struct.unpack_from(">I", bundle, entry.offset)
    blob = bundle[entry.offset + 4 : entry.offset + 4 + length]
    if entry.flags & RCC_ZSTD:
        raise RccError("zstd-compressed, which Python's standard library reads only from Python 3.14")
    if entry.flags & RCC_ZLIB:
        try:
            return zlib.decompress(blob[4:])
        except zlib.error as error:
            raise RccError(f"corrupt zlib data ({error})") from error
    return blob


class FetchError(Exception):
    """A package could not be fetched; the message says how it was tried and what apt answered."""


def apt_config(suite: str, folder: Path) -> list[str]:
    """apt-get options for a private configuration of Debian ``suite`` under ``folder`` (its own sources.list, package
    lists and cache; nothing of the system's changes), its lists fetched on first use."""
    root = folder / f"apt-{suite}"
    options = [
        *("-o", f"Dir::Etc::SourceList={root / 'sources.list'}"),
        *("-o", "Dir::Etc::SourceParts=/nonexistent"),
        *("-o", f"Dir::State::Lists={root / 'lists'}"),
        *("-o", f"Dir::Cache={root / 'cache'}"),
    ]
    failed = root / "update-failed"
    if failed.exists():
        raise FetchError(failed.read_text(encoding="utf-8"))
    if not root.exists():
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True)
        (root / "sources.list").write_text(f"deb http://deb.debian.org/debian {suite} main\n", encoding="utf-8")
        try:
            subprocess.run(["apt-get", *options, "update"], check=True, capture_output=True)
        except subprocess.CalledProcessError as error:
            failed.write_text(f"apt-get update for Debian {suite} failed: {apt_error(error)}", encoding="utf-8")
            raise FetchError(failed.read_text(encoding="utf-8")) from error
    return options


def apt_error(error: subprocess.CalledProcessError) -> str:
    """What apt said went wrong: its error lines (``E: …``), else its last line."""
    lines = (error.stderr or b"").decode(errors="replace").strip().splitlines()
    return (
        " / ".join([line for line in lines if line.startswith("E:")] or lines[-1:]) or f"exit status {error.returncode}"
    )


def unpack(package: str, folder: Path, version: str | None = None, suite: str | None = None) -> tuple[Path, str]:
    """``apt-get download`` ``package`` (at ``version`` if given) into ``folder`` and extract it there; returns the
    extracted tree and the version fetched. Tries this machine's package lists, then a private configuration of
    Debian ``suite``."""
    spec = f"{package}={version}" if version else package
    try:
        subprocess.run(["apt-get", "download", spec], cwd=folder, check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        tried = f"'apt-get download {spec}' with this machine's package lists failed: {apt_error(error)}"
        if suite is None:
            raise FetchError(tried) from error
        try:
            options = apt_config(suite, folder)
            subprocess.run(["apt-get", *options, "download", spec], cwd=folder, check=True, capture_output=True)
        except FetchError as config_error:
            hint = f"is deb.debian.org reachable, and does the debian-archive-keyring package know {suite}?"
            raise FetchError(f"{tried}; {config_error} ({hint})") from error
        except subprocess.CalledProcessError as suite_error:
            raise FetchError(f"{tried}; with Debian {suite}'s too: {apt_error(suite_error)}") from error
    archive = next(folder.glob(f"{package}_*.deb"))
    fetched = subprocess.run(["dpkg-deb", "--field", str(archive), "Version"], check=True, capture_output=True)
    root = folder / package
    subprocess.run(["dpkg-deb", "-x", str(archive), str(root)], check=True)
    return root, fetched.stdout.decode().strip()


def open_member(root: Path, member: str, bundles: dict[Path, tuple[bytes, dict[str, RccEntry]]]) -> Image.Image:
    """Open ``member`` of the package extracted at ``root``: a file, or ``BUNDLE.rcc:/PATH`` inside a Qt bundle
    (``bundles`` keeps each bundle read once)."""
    bundle, rcc, inner = member.partition(".rcc:")
    if not rcc:
        return Image.open(root / member.lstrip("/"))
    path = root / f"{bundle}.rcc".lstrip("/")
    if path not in bundles:
        data = path.read_bytes()
        bundles[path] = data, rcc_index(data)
    data, index = bundles[path]
    if inner not in index:
        raise RccError(f"no {inner} in {path.name}")
    return Image.open(io.BytesIO(rcc_read(data, index[inner])))


Thumbnails = tuple[tuple[float, ...], tuple[float, ...]]


def thumbnails(image: Image.Image) -> Thumbnails:
    """16x16 greyscale thumbnails of the whole image and of its centre square, each brightness and contrast
    normalised (mean 0, standard deviation 1), so that a rescaled, recompressed or retoned copy still matches."""
    grey = image.convert("L")
    side = min(grey.size)
    left, top = (grey.width - side) // 2, (grey.height - side) // 2
    whole, centre = (
        list(part.resize((16, 16), Image.Resampling.BOX).tobytes())
        for part in (grey, grey.crop((left, top, left + side, top + side)))
    )
    return normalise(whole), normalise(centre)


def normalise(values: list[int]) -> tuple[float, ...]:
    """``values`` shifted to mean 0 and scaled to standard deviation 1 (left at 0 where all are equal)."""
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values, mean) or 1.0
    return tuple((value - mean) / spread for value in values)


def distance(a: Thumbnails, b: Thumbnails) -> float:
    """Mean absolute difference of two photos' thumbnails, whole against whole or centre against centre, whichever
    is smaller: about 0.01 for a copy, around 1 for unrelated photos."""
    return min(sum(abs(x - y) for x, y in zip(p, q, strict=True)) / len(p) for p, q in zip(a, b, strict=True))


def load_thumbnails(folder: Path) -> list[tuple[Path, Thumbnails]]:
    """The thumbnails of every image in ``folder``, for ``--exclude``."""
    loaded = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                image.draft("L", (128, 128))
                loaded.append((path, thumbnails(image)))
    return loaded


def say(message: str) -> None:
    """Tell the user, on stderr, what was left out or went wrong."""
    print(f"debian_photos: {message}", file=sys.stderr)


def build(
    dest: Path,
    size: int,
    photos: Sequence[Photo] | None = None,
    exclude: Sequence[tuple[Path, Thumbnails]] = (),
    command: str = "",
) -> tuple[list[str], int]:
    """Write ``photos`` (default: the study set) and ``CREDITS.md`` into ``dest``, leaving out those smaller than
    ``size`` or near copies of one in ``exclude``; returns the credit lines and how many photos could not be fetched
    or read (each named in a message)."""
    photos = select("study") if photos is None else photos
    dest.mkdir(parents=True, exist_ok=True)
    credits = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="nst-debian-photos-") as scratch:
        for package in dict.fromkeys(photo.package for photo in photos):
            members = [photo for photo in photos if photo.package == package]
            pinned = PACKAGES.get(package, Package())
            try:
                root, version = unpack(package, Path(scratch), pinned.version, pinned.suite)
            except (FetchError, OSError, subprocess.CalledProcessError) as error:
                say(f"could not fetch {package} (its {len(members)} photos are missing): {error}")
                failed += len(members)
                continue
            bundles: dict[Path, tuple[bytes, dict[str, RccEntry]]] = {}
            for photo in members:
                try:
                    image = open_member(root, photo.member, bundles)
                    image.load()  # decode now, so that a damaged file is reported here
                except (OSError, RccError) as error:
                    say(f"could not read {photo.member} of {package}: {error}")
                    failed += 1
                    continue
                with image:
                    if min(image.size) < size:
                        say(f"left out {photo.name}: {image.width}x{image.height} is smaller than --size {size}")
                        continue
                    image = image.convert("RGB")
                    scale = size / min(image.size)
                    if scale < 1:
                        image = image.resize(
                            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
                        )
                    if exclude:
                        mine = thumbnails(image)
                        gap, twin = min((distance(mine, theirs), path) for path, theirs in exclude)
                        if gap <= NEAR_DUPLICATE:
                            say(f"left out {photo.name}: a near copy of {twin} (distance {gap:.3f})")
                            continue
                    image.save(dest / photo.name, quality=90)
                author, licence, link = photo.credit
                credits.append(
                    f"| {photo.name} | {author} | {licence} | Debian `{package}` {version} ({photo.member}) | {link} |"
                )
    header = [
        "# Credits",
        "",
        f"Built by `python bench/debian_photos.py DEST{command}` from Debian packages; each photo is under the licence",
        "named, credited as its package states.",
        "",
        "| file | author | licence | source | link |",
        "| --- | --- | --- | --- | --- |",
    ]
    (dest / "CREDITS.md").write_text("\n".join([*header, *credits]) + "\n", encoding="utf-8")
    return credits, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="folder to write the photos and CREDITS.md into")
    parser.add_argument(
        "--set",
        dest="photo_set",
        choices=("study", "wide"),
        default="study",
        help="study: the quality study's 25 photos (default); wide: 175 from seven packages",
    )
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="keep only public-domain, CC0 and CC-BY-* photos (no CC-BY-SA, GPL, GFDL)",
    )
    parser.add_argument("--size", type=int, default=384, help="shorter side in pixels (default 384)")
    parser.add_argument(
        "--exclude",
        type=Path,
        metavar="DIR",
        help=f"leave out near copies (thumbnail distance <= {NEAR_DUPLICATE}) of the images in DIR",
    )
    args = parser.parse_args(argv)
    exclude: list[tuple[Path, Thumbnails]] = []
    if args.exclude is not None:
        try:
            exclude = load_thumbnails(args.exclude)
        except OSError as error:
            say(f"--exclude {args.exclude}: {error}")
            return 1
        if not exclude:
            say(f"--exclude {args.exclude}: no images ({', '.join(IMAGE_SUFFIXES)}) there; name the folder to keep out")
            return 1
    command = f" --set {args.photo_set} --size {args.size}" + " --permissive" * args.permissive
    command += f" --exclude {args.exclude}" if args.exclude is not None else ""
    credits, failed = build(args.dest, args.size, select(args.photo_set, args.permissive), exclude, command)
    if not credits:
        say(f"wrote no photos to {args.dest}")
        return 1
    print(f"debian_photos: wrote {len(credits)} photos and CREDITS.md to {args.dest}")
    if failed:
        say(f"{failed} photos of the set could not be fetched or read (see above): the set is incomplete")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
