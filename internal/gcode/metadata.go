package gcode

import (
	"bytes"
	"math"
	"strconv"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
)

// Metadata is what the slicer wrote about the print, completed by what the
// inspector derived from the moves. A zero value means unknown: the file does
// not say it, or says only a placeholder (CuraEngine's command line writes
// ";TIME:6666" and ";Filament used: 0m" before slicing; those are never
// reported as truth).
type Metadata struct {
	SlicerName    string `json:"slicer,omitempty"`
	SlicerVersion string `json:"slicer_version,omitempty"`
	// EstimatedTime is the slicer's print time estimate in seconds.
	EstimatedTime float64 `json:"estimated_time,omitempty"`
	// FilamentUsedMM and FilamentUsedG are totals over all extruders.
	FilamentUsedMM float64 `json:"filament_used_mm,omitempty"`
	FilamentUsedG  float64 `json:"filament_used_g,omitempty"`
	// FilamentType is the first extruder's material ("PLA", "PETG", …).
	FilamentType     string  `json:"filament_type,omitempty"`
	LayerHeight      float64 `json:"layer_height,omitempty"`
	FirstLayerHeight float64 `json:"first_layer_height,omitempty"`
	// ObjectHeight is the printed object's height: the slicer's own figure,
	// else the highest Z at which material was extruded.
	ObjectHeight float64 `json:"object_height,omitempty"`
	// NozzleDiameter is the first extruder's nozzle the file was sliced for.
	NozzleDiameter float64 `json:"nozzle_diameter,omitempty"`
	// LayerCount is the slicer's layer total (for Klipper's
	// SET_PRINT_STATS_INFO TOTAL_LAYER): stated, else counted from layer
	// markers, else the number of distinct rising extrusion heights.
	LayerCount int `json:"layer_count,omitempty"`
	// MaxZ is the highest Z any move reaches, end-of-print lifts included:
	// the height the printer must have.
	MaxZ float64 `json:"max_z,omitempty"`
	// Extents is the print's bounding box when the slicer states a real one.
	Extents *Extents `json:"extents,omitempty"`
	// Thumbnails in file order; ThumbnailsSkipped counts the ones dropped
	// for exceeding a cap or failing to decode.
	Thumbnails        []Thumbnail `json:"thumbnails,omitempty"`
	ThumbnailsSkipped int         `json:"thumbnails_skipped,omitempty"`
}

// Extents is an axis-aligned bounding box in millimetres.
type Extents struct {
	MinX float64 `json:"min_x"`
	MinY float64 `json:"min_y"`
	MinZ float64 `json:"min_z"`
	MaxX float64 `json:"max_x"`
	MaxY float64 `json:"max_y"`
	MaxZ float64 `json:"max_z"`
}

// slicerConfig holds the settings read from "; key = value" lines.
type slicerConfig struct {
	layerHeight      float64
	firstLayerHeight float64
	firstLayerPct    float64 // Slic3r allows "first_layer_height = 75%"
	nozzle           float64
	filamentType     string
}

// metaState collects metadata from comment lines as they pass. Each slicer
// family writes a different dialect; the fields below are kept per source
// and combined with fixed priorities in result.
type metaState struct {
	opts Options

	slicerName, slicerVersion string

	timeStated       float64 // a slicer's total estimate (PrusaSlicer normal mode, Bambu, S3D, ideaMaker, Cura Griffin)
	curaTime         float64 // ";TIME:" unless the CLI placeholder
	curaTimeElapsed  float64 // the last ";TIME_ELAPSED:": CuraEngine's real total
	filamentMM       float64
	materialUsedMM   float64 // ideaMaker ";Material#N Used:", summed
	filamentGTotal   float64 // "total filament used [g]"
	filamentGSum     float64 // "filament used [g] = a, b", summed
	filamentType     string  // from a non-config comment
	nozzle           float64 // from a non-config comment
	layerHeight      float64 // Cura ";Layer height:", S3D layerHeight
	s3dFirstPct      float64 // S3D firstLayerHeightPercentage
	objectHeight     float64 // the slicer's own figure (last ";Z:", max_z_height, MAXZ, Bounding Box)
	layerCountStated int

	// Layer markers, counted per dialect so that a profile printing two
	// dialects (";LAYER_CHANGE" plus a custom ";LAYER:[n]") is not counted twice.
	prusaLayers, bambuLayers, curaLayers, s3dLayers int
	markers                                         int // all of the above
	heightAfterMarker                               [2]float64

	cfgBlock, cfgLoose slicerConfig
	inConfigBlock      bool
	configBlockSeen    bool

	extents     Extents
	extentsSeen uint8 // bit per Extents field

	thumb         *thumbDecoder
	thumbs        []Thumbnail
	thumbBytes    int
	thumbsSkipped int
}

func (s *metaState) init(opts Options) { s.opts = opts }

// comment inspects a comment line; body is what follows the ';'.
func (s *metaState) comment(body []byte, truncated bool, m *motionState) {
	t := bytes.TrimSpace(body)
	if s.thumb != nil {
		if bytes.Equal(t, s.thumb.endTag) {
			s.endThumbnail()
			return
		}
		if !bytes.HasPrefix(t, []byte("thumbnail")) {
			room := min(s.opts.MaxThumbnailBytes, s.opts.MaxThumbnailTotal-s.thumbBytes)
			s.thumb.data(t, truncated, room)
			return
		}
		s.endThumbnailEarly() // a new block began without the old one ending
	}
	if len(t) == 0 || truncated {
		return // no metadata comment is anywhere near linePrefixCap long
	}
	// Most comment lines match no rule: one array index and a few prefix
	// compares per line, on a pass over every line of files of 100 MB and more.
	rules := commentRulesByFirstByte[t[0]]
	for i := range rules {
		if r := &rules[i]; hasPrefix(t, r.prefix) && (!r.whole || len(t) == len(r.prefix)) {
			r.set(s, t[len(r.prefix):], m)
			return
		}
	}
	if t[0]-'a' >= 26 {
		return // the remaining dialects are lowercase keys
	}
	// Simplify3D settings: ";   layerHeight,0.2"
	if s.slicerName == "Simplify3D" && isIdentStart(t[0]) {
		if key, value, ok := bytes.Cut(t, []byte(",")); ok && isIdentifier(key) {
			s.simplify3DSetting(string(key), value)
			return
		}
	}
	s.configLine(t)
}

// commentRule reads one kind of metadata comment: the comment is prefix
// followed by a value (the whole comment is prefix when whole is set), and
// set records the value. The first matching rule ends the comment's
// inspection, so no rule's prefix may begin with an earlier rule's prefix.
type commentRule struct {
	slicer string // who writes it, for the reader and the tests' messages
	prefix string
	whole  bool
	set    func(s *metaState, v []byte, m *motionState)
}

// commentRules are the metadata comments of every slicer dialect but the
// "key = value" settings (configLine) and Simplify3D's "key,value" settings.
var commentRules = []commentRule{
	// Slicer identity.
	{"PrusaSlicer, SuperSlicer, OrcaSlicer, Slic3r", "generated by ", false, func(s *metaState, v []byte, _ *motionState) {
		s.identifyGeneratedBy(string(v)) // "PrusaSlicer 2.5.0 on 2026-11-27 at …"
	}},
	{"Cura", "Generated with ", false, func(s *metaState, v []byte, _ *motionState) {
		name, version, _ := strings.Cut(string(v), " ") // "Cura_SteamEngine 4.13.0"
		s.identify(name, version)
	}},
	{"Cura (Griffin header)", "GENERATOR.NAME:", false, func(s *metaState, v []byte, _ *motionState) {
		s.identify(string(v), "")
	}},
	{"Cura (Griffin header)", "GENERATOR.VERSION:", false, func(s *metaState, v []byte, _ *motionState) {
		if s.slicerVersion == "" {
			s.slicerVersion = string(v)
		}
	}},
	{"Simplify3D", "G-Code generated by Simplify3D(R) Version ", false, func(s *metaState, v []byte, _ *motionState) {
		s.identify("Simplify3D", string(v))
	}},
	{"ideaMaker", "Sliced by ideaMaker ", false, func(s *metaState, v []byte, _ *motionState) {
		version, _, _ := strings.Cut(string(v), ",") // "4.2.1.4630, 2022-08-15 …"
		s.identify("ideaMaker", version)
	}},
	{"Bambu Studio", "BambuStudio ", false, func(s *metaState, v []byte, _ *motionState) {
		s.identify("BambuStudio", string(v))
	}},

	// Layer markers, counted per dialect so that a profile printing two
	// (";LAYER_CHANGE" plus a custom ";LAYER:[n]") is not counted twice.
	{"PrusaSlicer, OrcaSlicer", "LAYER_CHANGE", true, func(s *metaState, _ []byte, m *motionState) { // not BEFORE_/AFTER_LAYER_CHANGE
		s.prusaLayers++
		s.marker(m)
	}},
	{"Cura, ideaMaker", "LAYER:", false, func(s *metaState, _ []byte, m *motionState) { // n may be negative for rafts
		s.curaLayers++
		s.marker(m)
	}},
	{"Bambu Studio", "CHANGE_LAYER", true, func(s *metaState, _ []byte, m *motionState) {
		s.bambuLayers++
		s.marker(m)
	}},
	{"Simplify3D", "layer ", false, func(s *metaState, v []byte, m *motionState) { // "; layer 1, Z = 0.200"
		if len(v) > 0 && isDigit(v[0]) && bytes.Contains(v, []byte(", Z = ")) {
			s.s3dLayers++
			s.marker(m)
		}
	}},

	// Bambu Studio and OrcaSlicer mark their config block.
	{"Bambu Studio, OrcaSlicer", "CONFIG_BLOCK_START", true, func(s *metaState, _ []byte, _ *motionState) {
		s.inConfigBlock, s.configBlockSeen = true, true
	}},
	{"Bambu Studio, OrcaSlicer", "CONFIG_BLOCK_END", true, func(s *metaState, _ []byte, _ *motionState) {
		s.inConfigBlock = false
	}},

	// Layer count and heights.
	{"Cura", "LAYER_COUNT:", false, func(s *metaState, v []byte, _ *motionState) {
		s.layerCountStated = atoi(v, s.layerCountStated)
	}},
	{"Bambu Studio, OrcaSlicer", "total layer number:", false, func(s *metaState, v []byte, _ *motionState) {
		s.layerCountStated = atoi(v, s.layerCountStated)
	}},
	{"OrcaSlicer (footer)", "total layers count = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.layerCountStated = atoi(v, s.layerCountStated)
	}},
	{"Cura", "Layer height:", false, func(s *metaState, v []byte, _ *motionState) {
		s.layerHeight = atof(v, s.layerHeight)
	}},
	{"PrusaSlicer, OrcaSlicer", "HEIGHT:", false, func(s *metaState, v []byte, _ *motionState) {
		// The heights after the first two layer markers stand in for
		// unstated first-layer and layer heights.
		if s.markers >= 1 && s.markers <= 2 && s.heightAfterMarker[s.markers-1] == 0 {
			s.heightAfterMarker[s.markers-1] = atof(v, 0)
		}
	}},

	// The object's height.
	{"PrusaSlicer, OrcaSlicer", "Z:", false, func(s *metaState, v []byte, _ *motionState) { // the last one is the top layer
		s.objectHeight = atof(v, s.objectHeight)
	}},
	{"Cura (Griffin header)", "PRINT.SIZE.MAX.Z:", false, func(s *metaState, v []byte, _ *motionState) {
		s.objectHeight = atof(v, s.objectHeight)
	}},
	{"Bambu Studio, OrcaSlicer", "max_z_height:", false, func(s *metaState, v []byte, _ *motionState) {
		s.objectHeight = atof(v, s.objectHeight)
	}},
	{"ideaMaker", "Bounding Box:", false, func(s *metaState, v []byte, _ *motionState) { // minX minY minZ maxX maxY maxZ
		if f := bytes.Fields(v); len(f) == 6 {
			s.objectHeight = atof(f[5], s.objectHeight)
		}
	}},
	// Cura's bounding box. CuraEngine's CLI writes ±2.14748e+06 before
	// slicing; such a box (min > max) is dropped in result.
	{"Cura", "MINX:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(0, v) }},
	{"Cura", "MINY:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(1, v) }},
	{"Cura", "MINZ:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(2, v) }},
	{"Cura", "MAXX:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(3, v) }},
	{"Cura", "MAXY:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(4, v) }},
	{"Cura", "MAXZ:", false, func(s *metaState, v []byte, _ *motionState) { s.bound(5, v) }},

	// Print time.
	{"PrusaSlicer", "estimated printing time (normal mode) = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.timeStated = parseDuration(v, s.timeStated)
	}},
	{"Bambu Studio", "model printing time:", false, func(s *metaState, v []byte, _ *motionState) {
		if _, total, ok := bytes.Cut(v, []byte("total estimated time:")); ok {
			s.timeStated = parseDuration(total, s.timeStated)
		}
	}},
	{"Cura", "TIME_ELAPSED:", false, func(s *metaState, v []byte, _ *motionState) {
		s.curaTimeElapsed = atof(v, s.curaTimeElapsed)
	}},
	{"Cura", "TIME:", false, func(s *metaState, v []byte, _ *motionState) {
		// 6666 is what CuraEngine's CLI writes before it knows.
		if t := atof(v, 0); t > 0 && t != 6666 {
			s.curaTime = t
		}
	}},
	{"Cura (Griffin header)", "PRINT.TIME:", false, func(s *metaState, v []byte, _ *motionState) {
		s.timeStated = atof(v, s.timeStated)
	}},
	{"ideaMaker", "Print Time:", false, func(s *metaState, v []byte, _ *motionState) {
		s.timeStated = atof(v, s.timeStated)
	}},
	{"Simplify3D", "Build time:", false, func(s *metaState, v []byte, _ *motionState) {
		s.timeStated = parseDuration(v, s.timeStated)
	}},

	// Filament used.
	{"PrusaSlicer, OrcaSlicer", "filament used [mm] = ", false, func(s *metaState, v []byte, _ *motionState) { // one value per extruder
		s.filamentMM = sumList(v, "")
	}},
	{"PrusaSlicer, OrcaSlicer", "filament used [g] = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentGSum = sumList(v, "")
	}},
	{"PrusaSlicer, OrcaSlicer", "total filament used [g] = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentGTotal = atof(v, s.filamentGTotal)
	}},
	{"Slic3r", "filament used = ", false, func(s *metaState, v []byte, _ *motionState) { // "990.9mm (2.4cm3)"
		mm, _, _ := bytes.Cut(v, []byte("mm"))
		s.filamentMM = atof(mm, s.filamentMM)
	}},
	{"Bambu Studio", "total filament length [mm] :", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentMM = atof(v, s.filamentMM)
	}},
	{"Bambu Studio", "total filament weight [g] :", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentGTotal = atof(v, s.filamentGTotal)
	}},
	{"Cura", "Filament used:", false, func(s *metaState, v []byte, _ *motionState) { // "1.30263m" or "1.2m, 0.3m"
		if sum := sumList(v, "m"); sum > 0 {
			s.filamentMM = sum * 1000
		}
	}},
	{"ideaMaker", "Material#", false, func(s *metaState, v []byte, _ *motionState) { // "Material#1 Used: 1234.5"
		if _, n, ok := bytes.Cut(v, []byte("Used:")); ok {
			s.materialUsedMM += atof(n, 0)
		}
	}},
	{"Simplify3D", "Filament length: ", false, func(s *metaState, v []byte, _ *motionState) { // "4231.2 mm (4.23 m)"
		mm, _, _ := bytes.Cut(v, []byte(" mm"))
		s.filamentMM = atof(mm, s.filamentMM)
	}},
	{"Simplify3D", "Plastic weight: ", false, func(s *metaState, v []byte, _ *motionState) { // "12.72 g (0.03 lb)"
		g, _, _ := bytes.Cut(v, []byte(" g"))
		s.filamentGTotal = atof(g, s.filamentGTotal)
	}},

	// Material and nozzle.
	{"Cura (machine headers), ideaMaker", "Filament type = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentType = firstItem(v)
	}},
	{"ideaMaker", "Filament Type #1:", false, func(s *metaState, v []byte, _ *motionState) {
		s.filamentType = firstItem(v)
	}},
	{"Cura (machine headers)", "Nozzle diameter = ", false, func(s *metaState, v []byte, _ *motionState) {
		s.nozzle = atof(v, s.nozzle)
	}},
	{"Cura (Griffin header)", "EXTRUDER_TRAIN.0.NOZZLE.DIAMETER:", false, func(s *metaState, v []byte, _ *motionState) {
		s.nozzle = atof(v, s.nozzle)
	}},
	{"ideaMaker", "Dimension:", false, func(s *metaState, v []byte, _ *motionState) { // bed X Y Z, then the nozzle
		if f := bytes.Fields(v); len(f) == 4 {
			s.nozzle = atof(f[3], s.nozzle)
		}
	}},

	// Thumbnail blocks; their lines until the end tag go to the decoder.
	{"PrusaSlicer, OrcaSlicer, Bambu Studio", "thumbnail", false, func(s *metaState, v []byte, _ *motionState) {
		if d, ok := thumbnailBegin(v); ok {
			s.beginThumbnail(d)
		}
	}},
}

// commentRulesByFirstByte holds commentRules by their prefix's first byte.
var commentRulesByFirstByte = func() (idx [256][]commentRule) {
	for _, r := range commentRules {
		idx[r.prefix[0]] = append(idx[r.prefix[0]], r)
	}
	return idx
}()

// configLine handles "key = value" (PrusaSlicer, SuperSlicer, Slic3r, Orca,
// Bambu). Values count only inside the config block when the slicer writes
// one; Slic3r 1.3 writes its config at the end without markers.
func (s *metaState) configLine(t []byte) {
	key, value, ok := bytes.Cut(t, []byte(" = "))
	if !ok || !isIdentifier(key) {
		return
	}
	if bytes.HasSuffix(key, []byte("_config")) { // "; prusaslicer_config = begin"
		switch string(value) {
		case "begin":
			s.inConfigBlock, s.configBlockSeen = true, true
		case "end":
			s.inConfigBlock = false
		}
		return
	}
	cfg := &s.cfgLoose
	if s.inConfigBlock {
		cfg = &s.cfgBlock
	}
	switch string(key) {
	case "layer_height":
		cfg.layerHeight = atof(value, cfg.layerHeight)
	case "first_layer_height", "initial_layer_print_height":
		if pct, ok := bytes.CutSuffix(value, []byte("%")); ok {
			cfg.firstLayerPct = atof(pct, cfg.firstLayerPct)
		} else {
			cfg.firstLayerHeight = atof(value, cfg.firstLayerHeight)
		}
	case "nozzle_diameter":
		cfg.nozzle = atof([]byte(firstItem(value)), cfg.nozzle)
	case "filament_type":
		cfg.filamentType = firstItem(value)
	}
}

func (s *metaState) simplify3DSetting(key string, value []byte) {
	switch key {
	case "layerHeight":
		s.layerHeight = atof(value, s.layerHeight)
	case "firstLayerHeightPercentage":
		s.s3dFirstPct = atof(value, s.s3dFirstPct)
	case "extruderDiameter", "nozzleDiameter":
		s.nozzle = atof([]byte(firstItem(value)), s.nozzle)
	case "makerBotModelMaterial":
		s.filamentType = firstItem(value)
	}
}

// bound records one side of Cura's ";MINX:"…";MAXZ:" box (idx in Extents'
// field order). Unlike other values, a coordinate may be negative.
func (s *metaState) bound(idx int, v []byte) {
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return
	}
	fields := [...]*float64{&s.extents.MinX, &s.extents.MinY, &s.extents.MinZ, &s.extents.MaxX, &s.extents.MaxY, &s.extents.MaxZ}
	*fields[idx] = f
	s.extentsSeen |= 1 << idx
}

func (s *metaState) marker(m *motionState) {
	s.markers++
	if s.markers == 1 {
		m.awaitFirstLayerZ = true
	}
}

func (s *metaState) identify(name, version string) {
	if s.slicerName != "" || name == "" {
		return
	}
	s.slicerName, s.slicerVersion = name, strings.TrimSpace(version)
}

// identifyGeneratedBy parses "PrusaSlicer 2.5.0 on 2026-11-27 at …" or
// "Slic3r Prusa Edition 1.41.3+linux64 on …": the name is every word before
// the first one that starts with a digit, which is the version.
func (s *metaState) identifyGeneratedBy(v string) {
	words := strings.Fields(v)
	for i, w := range words {
		if isDigit(w[0]) {
			s.identify(strings.Join(words[:i], " "), w)
			return
		}
	}
}

func (s *metaState) beginThumbnail(d *thumbDecoder) {
	if len(s.thumbs) >= s.opts.MaxThumbnails || (d.stated > 0 && d.stated/4*3 > min(s.opts.MaxThumbnailBytes, s.opts.MaxThumbnailTotal-s.thumbBytes)) {
		d.fail() // still follow the block, to skip its lines
	}
	s.thumb = d
}

func (s *metaState) endThumbnail() {
	if t, ok := s.thumb.finish(); ok {
		s.thumbs = append(s.thumbs, t)
		s.thumbBytes += len(t.Data)
	} else {
		s.thumbsSkipped++
	}
	s.thumb = nil
}

// endThumbnailEarly drops a thumbnail block interrupted before its end line.
func (s *metaState) endThumbnailEarly() {
	s.thumbsSkipped++
	s.thumb = nil
}

// result combines the sources, best first.
func (s *metaState) result(m *motionState) *Metadata {
	if s.thumb != nil {
		s.endThumbnailEarly()
	}
	cfg := s.cfgLoose
	if s.configBlockSeen {
		cfg = s.cfgBlock
	}
	md := &Metadata{
		// Comment text is the creator's: shown in status and checked
		// against the loaded filament, so cleaned like every outside name.
		SlicerName:        textsafe.Clean(s.slicerName, 64),
		SlicerVersion:     textsafe.Clean(s.slicerVersion, 64),
		EstimatedTime:     firstNonZero(s.timeStated, s.curaTimeElapsed, s.curaTime),
		FilamentUsedMM:    firstNonZero(s.filamentMM, s.materialUsedMM),
		FilamentUsedG:     firstNonZero(s.filamentGTotal, s.filamentGSum),
		FilamentType:      textsafe.Clean(cfg.filamentType, 64),
		LayerHeight:       firstNonZero(cfg.layerHeight, s.layerHeight, s.heightAfterMarker[1]),
		NozzleDiameter:    firstNonZero(cfg.nozzle, s.nozzle),
		Thumbnails:        s.thumbs,
		ThumbnailsSkipped: s.thumbsSkipped,
	}
	if md.FilamentType == "" {
		md.FilamentType = textsafe.Clean(s.filamentType, 64)
	}
	var pct float64
	if cfg.firstLayerPct > 0 {
		pct = cfg.firstLayerPct
	} else if s.s3dFirstPct > 0 {
		pct = s.s3dFirstPct
	}
	md.FirstLayerHeight = firstNonZero(cfg.firstLayerHeight, round4(pct*md.LayerHeight/100), s.heightAfterMarker[0])
	if md.FirstLayerHeight == 0 && m.firstLayerZKnown && m.firstLayerZ > 0 {
		md.FirstLayerHeight = round4(m.firstLayerZ)
	}
	md.LayerCount = s.layerCountStated
	for _, n := range [...]int{s.prusaLayers, s.bambuLayers, s.curaLayers, s.s3dLayers, m.extrusionLevels} {
		if md.LayerCount == 0 {
			md.LayerCount = n
		}
	}
	if s.extentsSeen == 0x3f && s.extents.MinX <= s.extents.MaxX && s.extents.MinY <= s.extents.MaxY &&
		s.extents.MinZ <= s.extents.MaxZ {
		e := s.extents
		md.Extents = &e
		md.ObjectHeight = e.MaxZ
	}
	if s.objectHeight > 0 {
		md.ObjectHeight = s.objectHeight
	}
	if md.ObjectHeight == 0 && m.extruded {
		md.ObjectHeight = round4(m.maxExtrusionZ)
	}
	if m.maxZKnown && m.maxZ > 0 {
		md.MaxZ = round4(m.maxZ)
	}
	return md
}

func firstNonZero(vs ...float64) float64 {
	for _, v := range vs {
		if v != 0 {
			return v
		}
	}
	return 0
}

// round4 removes the float noise of summed relative moves (0.1 mm / 10⁴).
func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

func hasPrefix(t []byte, p string) bool { return len(t) >= len(p) && string(t[:len(p)]) == p }

func isIdentifier(b []byte) bool {
	if len(b) == 0 || !isIdentStart(b[0]) {
		return false
	}
	for _, c := range b {
		if !isIdentChar(c) {
			return false
		}
	}
	return true
}

// atof parses a number surrounded by blanks; on failure (or a non-finite or
// negative value, which no metadata field can hold) it keeps old.
func atof(b []byte, old float64) float64 {
	v, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || v < 0 {
		return old
	}
	return v
}

func atoi(b []byte, old int) int {
	v, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || v < 0 {
		return old
	}
	return v
}

// sumList sums "a, b, c" (each optionally followed by unit).
func sumList(b []byte, unit string) float64 {
	var sum float64
	for _, item := range bytes.Split(b, []byte(",")) {
		item = bytes.TrimSuffix(bytes.TrimSpace(item), []byte(unit))
		sum += atof(item, 0)
	}
	return sum
}

// firstItem returns the first of a ',' or ';' separated list of settings
// (one per extruder).
func firstItem(b []byte) string {
	if i := bytes.IndexAny(b, ",;"); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// parseDuration reads "1d 2h 3m 4s" (PrusaSlicer, Orca, Bambu) and
// "1 hours 2 minutes" (Simplify3D): numbers each followed by a unit whose
// first letter is d, h, m or s. It keeps old when nothing parses.
func parseDuration(b []byte, old float64) float64 {
	var total float64
	parts := 0
	for len(b) > 0 {
		b = bytes.TrimLeft(b, " \t")
		i := 0
		for i < len(b) && (isDigit(b[i]) || b[i] == '.') {
			i++
		}
		if i == 0 {
			break
		}
		n, err := strconv.ParseFloat(string(b[:i]), 64)
		if err != nil {
			return old
		}
		b = bytes.TrimLeft(b[i:], " \t")
		if len(b) == 0 {
			return old
		}
		var unit float64
		switch b[0] {
		case 'd':
			unit = 86400
		case 'h':
			unit = 3600
		case 'm':
			unit = 60
		case 's':
			unit = 1
		default:
			return old
		}
		for len(b) > 0 && b[0]|0x20-'a' < 26 {
			b = b[1:]
		}
		total += n * unit
		parts++
	}
	if parts == 0 {
		return old
	}
	return total
}
