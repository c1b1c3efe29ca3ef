"""Question and answer pools of the synthetic benchmark: implicit, EarthReason-style phrasings.

Supports the synthetic benchmark of data/synth.py (paper Sec. 3: implicit questions, reasoning answers).
"seen" phrasings are used in train/val/test; "heldout" phrasings only in the test split.
"""

from __future__ import annotations

# Per category: questions never name the category; answers explain the reasoning. {loc} is replaced by
# a location phrase such as "in the upper left of the image".
TEXT: dict[str, dict[str, list[str]]] = {
    "runway": {
        "seen": [
            "Where could a small plane land safely in this area?",
            "Which surface in this scene is built for aircraft to speed up and lift off the ground?",
            "If a pilot needed a long, flat, paved strip to touch down, where should they aim?",
            "Where in this scene would jets line up before departure?",
            "Which part of the image is reserved for airplanes arriving and departing?",
            "Identify the long strip with painted markings that serves air traffic.",
        ],
        "heldout": [
            "Point out where an airliner would put its wheels down.",
            "Which area would an air traffic controller clear for a landing here?",
            "If you had to guide an aircraft safely to the ground, which surface would you pick?",
            "Which paved surface here is long enough for a plane to decelerate after landing?",
        ],
        "answers": [
            "The long, straight paved strip {loc} has threshold bars and a dashed centre line, which marks it "
            "as a runway built for aircraft take-off and landing.",
            "{Loc}, a wide concrete strip far longer than any road runs in a straight line; its markings show "
            "it is the runway where planes touch down.",
            "Aircraft need a long, flat and clear surface; the marked runway {loc} provides exactly that.",
        ],
    },
    "soccer field": {
        "seen": [
            "Where could two teams play a full football match here?",
            "Which area would a local club use for its weekend league games?",
            "Where would players take a penalty kick in this scene?",
            "Which open lawn with painted lines is meant for kicking a ball between two goals?",
            "Where could children practise dribbling on a regulation pitch?",
            "Which place in this image hosts eleven-a-side matches?",
        ],
        "heldout": [
            "Where would a referee blow the whistle to start a match?",
            "Point out the turf where a striker would try to score.",
            "If a town organised a football tournament, which ground would they book?",
            "Which grass pitch has goals at both ends?",
        ],
        "answers": [
            "The striped green rectangle {loc} has a halfway line, a centre circle and penalty boxes, so it is "
            "a soccer pitch where full matches are played.",
            "{Loc} lies a mown lawn with white touchlines and goal areas at both ends, the layout of a football "
            "field.",
            "Football needs a large marked pitch; the field {loc} with its centre circle is that pitch.",
        ],
    },
    "running track": {
        "seen": [
            "Where could athletes train for a 400 metre race?",
            "Which facility here would host a school sports day with sprint events?",
            "Where could a jogger run laps on a cushioned surface?",
            "Which oval structure is designed for track and field competitions?",
            "Where would a relay team practise passing the baton?",
            "Which area would be the most secure place to gather many people after an earthquake, with open space all around?",
        ],
        "heldout": [
            "If a marathon runner wanted to do interval training, where would they go?",
            "Point out the place where hurdlers would compete.",
            "Where would spectators watch a 100 metre dash in this scene?",
            "Where could a school hold its annual athletics meet?",
        ],
        "answers": [
            "The reddish oval ring {loc} with white lane lines around a green infield is a running track, made "
            "for laps and races.",
            "{Loc} is a stadium-shaped track with several lanes; its rubber surface and bends are built for "
            "athletics.",
            "Track events need marked lanes on a closed loop; the oval track {loc} offers a large open area "
            "that is also safe for gatherings.",
        ],
    },
    "basketball court": {
        "seen": [
            "Where could friends play a quick game of hoops outdoors?",
            "Which small paved area is marked for shooting free throws?",
            "Where would a team practise three-point shots in this neighbourhood?",
            "Which hard court here has a key and a centre circle for a ball game played with baskets?",
            "Where could two teams of five compete on a hard surface?",
        ],
        "heldout": [
            "Point out where someone would dribble and dunk a ball.",
            "If a youth club wanted a pick-up game with hoops, where would they play?",
            "Which court has painted arcs around each basket?",
            "Where is the hard court for a game with two hoops?",
        ],
        "answers": [
            "The small painted court {loc} shows three-point arcs, keys and a centre circle, the marks of a "
            "basketball court.",
            "{Loc} a compact hard court with a painted key at each end provides the space for a basketball "
            "game.",
            "Basketball needs a short hard court with arcs around the hoops; the court {loc} matches that.",
        ],
    },
    "tennis court": {
        "seen": [
            "Where could two people play a match with rackets and a net?",
            "Which courts here are laid out for serving and volleying?",
            "Where would a coach give lessons on forehands and backhands?",
            "Which surfaces are divided by a net with service boxes on both sides?",
            "Where could a doubles match take place in this scene?",
            "Which small rectangular courts are marked with baselines and service lines?",
        ],
        "heldout": [
            "Point out where a player would hit a serve into the service box.",
            "If a club hosted a racket tournament, which courts would it use?",
            "Where would you hear the umpire call 'deuce'?",
            "Where could you rally a ball back and forth over a low net?",
        ],
        "answers": [
            "The rectangular courts {loc} have a net across the middle, baselines and service boxes, the layout "
            "of tennis courts.",
            "{Loc} are hard courts with white singles and doubles sidelines and a central net line, built for "
            "tennis.",
            "Racket games need a net and service boxes; the courts {loc} provide both.",
        ],
    },
    "swimming pool": {
        "seen": [
            "Where could residents cool off with a swim on a hot day?",
            "Which bright blue basins would a lifeguard keep watch over?",
            "Where could someone practise their front crawl in this area?",
            "Which small bodies of clear water were built for recreation?",
            "Where would a family go for a dip in the afternoon?",
        ],
        "heldout": [
            "Point out where people could do laps in chlorinated water.",
            "If children wanted splash games, where would they head?",
            "Which man-made water features are meant for bathing?",
            "Which pools of water are meant for people to swim in?",
        ],
        "answers": [
            "The bright turquoise basins {loc} with pale borders are swimming pools, built for bathing and "
            "exercise.",
            "{Loc} the small, sharply edged areas of clear blue water are pools made for swimming.",
            "Swimming needs clean, shallow water; the pools {loc} provide that, unlike the natural water in the "
            "scene.",
        ],
    },
    "parking lot": {
        "seen": [
            "Where could visitors leave their cars while they shop?",
            "Which paved area is divided into stalls for vehicles?",
            "Where would a driver look for an empty space to stop for a few hours?",
            "Which part of this scene stores many cars side by side?",
            "Where could a delivery van wait without blocking traffic?",
            "Which asphalt surface is marked with rows of white lines for vehicles?",
        ],
        "heldout": [
            "Point out where commuters would park before catching a bus.",
            "If an event drew hundreds of drivers, where would they leave their vehicles?",
            "Where would you search for your car after a concert?",
            "Which area is full of stationary vehicles in neat rows?",
        ],
        "answers": [
            "The asphalt area {loc} is marked with rows of stalls and filled with cars, so it is a parking lot.",
            "{Loc} lies a paved lot with painted parking spaces and parked vehicles, the place to leave a car.",
            "Cars need marked spaces off the road; the parking lot {loc} offers them.",
        ],
    },
    "farmland": {
        "seen": [
            "Where are crops being grown in this scene?",
            "Which land would a farmer plough and sow each spring?",
            "Where could a harvester work along straight rows?",
            "Which fields are cultivated in parallel strips?",
            "Where does the food production in this area happen?",
            "Which patches show the regular rows left by planting machines?",
        ],
        "heldout": [
            "Point out the land used for agriculture.",
            "If you wanted to buy fresh vegetables from the grower, which land would you visit?",
            "Which parcels are tilled for harvests?",
            "Where is the ground worked to produce a harvest?",
        ],
        "answers": [
            "The parcels {loc} are covered with regular parallel rows of crops, typical of cultivated farmland.",
            "{Loc} the land is divided into striped fields ploughed in straight lines, which shows it is used "
            "for agriculture.",
            "Crops are planted in rows by machines; the striped fields {loc} are that farmland.",
        ],
    },
    "forest": {
        "seen": [
            "Where could someone go hiking in the shade of trees?",
            "Which area provides habitat for woodland animals?",
            "Where is the densest tree canopy in this scene?",
            "Which region would a forester survey for timber?",
            "Where would you expect the most shade on a sunny afternoon?",
            "Which patch absorbs the most carbon thanks to its trees?",
        ],
        "heldout": [
            "Point out the woodland.",
            "If a deer needed cover, where would it hide?",
            "Which area is covered by a closed canopy of treetops?",
            "Where would a wildfire spread fastest through dense trees?",
        ],
        "answers": [
            "The dark, bumpy green area {loc} is a closed canopy of tree crowns, a forest.",
            "{Loc} the texture of many rounded crowns and deep shadows shows dense woodland.",
            "Shade and habitat come from trees; the forest {loc} has the densest canopy in the scene.",
        ],
    },
    "bare land": {
        "seen": [
            "Where is the ground left without any vegetation or buildings?",
            "Which area could be levelled quickly for a new construction project?",
            "Where is the soil exposed to wind erosion?",
            "Which patch of land has nothing growing on it?",
            "Where could off-road vehicles drive without damaging crops or lawns?",
        ],
        "heldout": [
            "Point out the unused, barren ground.",
            "If a developer needed an empty plot, where would they build?",
            "Which area is plain dirt?",
            "Which area has no plants, no roads and no buildings on it?",
        ],
        "answers": [
            "The brown patch {loc} shows bare soil with tyre tracks and no vegetation, so it is bare land.",
            "{Loc} the ground is exposed earth without crops, trees or buildings.",
            "An empty plot without plants or structures is easiest to build on; the bare land {loc} is that "
            "plot.",
        ],
    },
    "storage tank": {
        "seen": [
            "Where might fuel or chemicals be stored in this scene?",
            "Which round structures would a fire brigade worry about most?",
            "Where is the oil kept at this industrial site?",
            "Which cylindrical containers hold liquids in bulk?",
            "Where would a tanker truck unload petroleum here?",
        ],
        "heldout": [
            "Point out the containers that store liquid in large volumes.",
            "If a leak of petrol were reported, where would inspectors look first?",
            "Which circular tops belong to large tanks?",
            "Where is the fuel depot's bulk storage?",
        ],
        "answers": [
            "The white circular roofs {loc} with shadows on one side are large cylindrical storage tanks for "
            "liquids.",
            "{Loc} stand round tanks on a concrete pad, the typical storage for oil or chemicals.",
            "Liquids are stored in bulk in cylinders; the tanks {loc} are the round structures seen from "
            "above.",
        ],
    },
    "solar farm": {
        "seen": [
            "Where is electricity being generated from sunlight?",
            "Which installation would reduce this area's dependence on fossil fuels?",
            "Where would a technician clean photovoltaic modules?",
            "Which dark, regularly spaced rows capture solar energy?",
            "Where does renewable power come from in this scene?",
        ],
        "heldout": [
            "Point out the panels that turn sunshine into power.",
            "If the grid operator wanted to check on green energy output, where would they go?",
            "Which array harvests energy from the sun?",
            "Where is the photovoltaic power plant?",
        ],
        "answers": [
            "The dark blue rows {loc}, evenly spaced and all tilted the same way, are photovoltaic panels of a "
            "solar farm.",
            "{Loc} a large array of dark panels in parallel rows converts sunlight into electricity.",
            "Solar power needs many panels facing the sun; the array {loc} is that installation.",
        ],
    },
    "greenhouse": {
        "seen": [
            "Where could vegetables grow all year round under cover?",
            "Which structures trap the sun's heat to protect plants?",
            "Where would a gardener raise seedlings out of the frost?",
            "Which long translucent buildings are used for protected farming?",
            "Where are crops grown under plastic or glass in this scene?",
        ],
        "heldout": [
            "Point out the covered buildings for growing plants.",
            "If tomatoes were grown in winter here, where would they be?",
            "Which bright, elongated roofs shelter crops?",
            "Where are plants grown in heated, covered halls?",
        ],
        "answers": [
            "The long, pale translucent roofs {loc}, set side by side, are greenhouses that shelter crops.",
            "{Loc} stand parallel glass or plastic halls where plants grow under cover.",
            "Protected farming needs covered halls; the greenhouses {loc} are those halls.",
        ],
    },
    "lake": {
        "seen": [
            "Where could someone go fishing from the shore?",
            "Which area collects still water surrounded by land?",
            "Where could a small boat sail without a current?",
            "Which body of water would supply irrigation for the nearby land?",
            "Where would ducks find calm water in this scene?",
        ],
        "heldout": [
            "Point out the still water enclosed by land.",
            "If a town needed a reservoir, which water body would serve it?",
            "Where could you paddle a canoe in calm water?",
            "Which water here has no current and no outlet to the sea?",
        ],
        "answers": [
            "The dark, irregular area {loc} is a body of still water with a sandy shoreline all around, a lake.",
            "{Loc} lies enclosed, calm water without a current, which is a lake.",
            "Fishing and boating need still water; the lake {loc} is surrounded by land on every side.",
        ],
    },
    "island": {
        "seen": [
            "Where is land that can only be reached by boat?",
            "Which piece of ground is completely surrounded by water?",
            "Where could birds nest safe from land predators?",
            "Which area would be cut off if the bridges were gone, with water on every side?",
        ],
        "heldout": [
            "Point out the land in the middle of the water.",
            "If you were stranded, where could you stand with water all around you?",
            "Which ground is encircled by the lake?",
            "Where could a lighthouse keeper live surrounded by the lake?",
        ],
        "answers": [
            "The patch of land {loc} is entirely surrounded by water, so it is an island.",
            "{Loc} a vegetated area rises from the lake with water on all sides.",
            "Only land enclosed by water can be reached just by boat; the island {loc} is such land.",
        ],
    },
    "river": {
        "seen": [
            "Where does water flow through this area?",
            "Which feature could carry a kayak downstream?",
            "Where would floods most likely come from after heavy rain?",
            "Which winding water course drains the surrounding land?",
            "Where could barges travel through the scene?",
        ],
        "heldout": [
            "Point out the flowing water.",
            "If you followed the current, which channel would you follow?",
            "Which long, meandering band of water crosses the image?",
            "Which water course would a hydrologist measure for discharge?",
        ],
        "answers": [
            "The long, winding band of water {loc} with vegetated banks is a river.",
            "{Loc} a meandering channel of water crosses the scene and drains the land around it.",
            "Flowing water forms a long, narrow channel; the river {loc} is that channel.",
        ],
    },
    "bridge": {
        "seen": [
            "Where can cars cross the river?",
            "Which structure lets traffic pass over the water?",
            "Where would pedestrians walk to reach the other bank without getting wet?",
            "Which part of the road network spans the water course?",
            "Where is the crossing point between the two banks?",
        ],
        "heldout": [
            "Point out the way across the river.",
            "If a flood cut the roads, which structure would keep the banks connected?",
            "Where does the road continue over the water?",
            "Which structure would a truck drive over to cross the water?",
        ],
        "answers": [
            "Where the road meets the river {loc}, a raised deck with a shadow on the water carries traffic "
            "across: this is the bridge.",
            "{Loc} the road continues over the water on a bridge, the only dry crossing between the banks.",
            "Crossing water needs a bridge; the deck {loc} connects the roads on both banks.",
        ],
    },
}
