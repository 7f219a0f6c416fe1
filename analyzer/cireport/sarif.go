package cireport

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path"
	"path/filepath"
	"strings"

	"libleak/analyzer/baseline"
	"libleak/analyzer/report"
)

const (
	sarifSchema  = "https://json.schemastore.org/sarif-2.1.0.json"
	sarifVersion = "2.1.0"
	// srcRootID is the uriBaseId under which files inside the source root
	// are written, as GitHub's own analyzers do.
	srcRootID = "SRCROOT"
	// fingerprintKey names the partial fingerprint; "v1" changes if the
	// site key ever does.
	fingerprintKey = "libleakSite/v1"
)

type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool               sarifTool                   `json:"tool"`
	OriginalURIBaseIDs map[string]sarifArtifactLoc `json:"originalUriBaseIds,omitempty"`
	Results            []sarifResult               `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name    string      `json:"name"`
	Version string      `json:"version,omitempty"`
	Rules   []sarifRule `json:"rules"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifRule struct {
	ID                   string              `json:"id"`
	Name                 string              `json:"name"`
	ShortDescription     sarifText           `json:"shortDescription"`
	FullDescription      sarifText           `json:"fullDescription"`
	Help                 sarifText           `json:"help"`
	DefaultConfiguration sarifRuleConfig     `json:"defaultConfiguration"`
	Properties           sarifRuleProperties `json:"properties"`
}

type sarifRuleConfig struct {
	Level string `json:"level"`
}

type sarifRuleProperties struct {
	Tags []string `json:"tags"`
}

type sarifResult struct {
	RuleID              string                `json:"ruleId"`
	RuleIndex           int                   `json:"ruleIndex"`
	Level               string                `json:"level"`
	Message             sarifText             `json:"message"`
	Locations           []sarifLocation       `json:"locations,omitempty"`
	PartialFingerprints map[string]string     `json:"partialFingerprints"`
	Stacks              []sarifStack          `json:"stacks,omitempty"`
	Properties          sarifResultProperties `json:"properties"`
}

type sarifResultProperties struct {
	Kind          string `json:"kind"`
	Bytes         uint64 `json:"bytes"`
	Blocks        uint64 `json:"blocks"`
	IndirectBytes uint64 `json:"indirectBytes,omitempty"`
	Pid           int    `json:"pid"`
	Executable    string `json:"executable,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation *sarifPhysical `json:"physicalLocation,omitempty"`
	LogicalLocations []sarifLogical `json:"logicalLocations,omitempty"`
	Message          *sarifText     `json:"message,omitempty"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifactLoc `json:"artifactLocation"`
	Region           *sarifRegion     `json:"region,omitempty"`
}

type sarifArtifactLoc struct {
	URI       string `json:"uri"`
	URIBaseID string `json:"uriBaseId,omitempty"`
}

type sarifRegion struct {
	StartLine int `json:"startLine"`
}

type sarifLogical struct {
	FullyQualifiedName string `json:"fullyQualifiedName"`
	Kind               string `json:"kind"`
}

type sarifStack struct {
	Message sarifText    `json:"message"`
	Frames  []sarifFrame `json:"frames"`
}

type sarifFrame struct {
	Location sarifLocation `json:"location"`
	Module   string        `json:"module,omitempty"`
}

// ruleInfo describes the rule of each known kind, in rule index order.
var ruleInfo = []struct {
	kind, name, short, full string
}{
	{report.KindDefinite, "DefiniteLeak", "Memory definitely lost",
		"An allocated block was still allocated at exit and no pointer to it remained anywhere in memory."},
	{report.KindIndirect, "IndirectLeak", "Memory indirectly lost",
		"An allocated block was reachable only from blocks that were themselves lost; freeing the definitely lost block that owns it usually fixes both."},
	{report.KindPossible, "PossibleLeak", "Memory possibly lost",
		"An allocated block was still allocated at exit and only pointers into its middle remained, which usually means it was lost."},
	{report.KindReachable, "ReachableMemory", "Memory still reachable at exit",
		"An allocated block was still allocated at exit and a pointer to it remained; it was never freed but is not lost."},
	{report.KindUnfreed, "UnfreedMemory", "Memory not freed at exit",
		"An allocated block was still allocated at exit; the process ended without a reachability scan, so whether it was lost is unknown."},
}

// WriteSARIF writes a SARIF 2.1.0 log with one run and one result per leak
// site. Each kind has its own rule, "leak/KIND". A result is located at the
// frame described in the package comment: files under sourceRoot (when not
// empty) are written relative to it, under the uriBaseId SRCROOT, and
// others as file:// URIs. The whole stack is attached as a SARIF stack, and
// partialFingerprints carries a hash of the baseline site key so that code
// scanning tracks a leak across rebuilds.
func WriteSARIF(w io.Writer, r *report.Report, toolVersion, sourceRoot string) error {
	root := ""
	if sourceRoot != "" {
		if abs, err := filepath.Abs(sourceRoot); err == nil {
			root = abs
		} else {
			root = filepath.Clean(sourceRoot)
		}
	}
	run := sarifRun{
		Tool:    sarifTool{Driver: sarifDriver{Name: "libleak", Version: toolVersion}},
		Results: []sarifResult{},
	}
	index := map[string]int{}
	addRule := func(kind, name, short, full string) {
		index[kind] = len(run.Tool.Driver.Rules)
		run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
			ID:                   "leak/" + kind,
			Name:                 name,
			ShortDescription:     sarifText{short},
			FullDescription:      sarifText{full},
			Help:                 sarifText{full + " The allocation stack shows where the block was allocated."},
			DefaultConfiguration: sarifRuleConfig{severity(kind)},
			Properties:           sarifRuleProperties{Tags: []string{"memory", "leak"}},
		})
	}
	for _, ri := range ruleInfo {
		addRule(ri.kind, ri.name, ri.short, ri.full)
	}
	procs := processes(r)
	for _, l := range leaks(r) {
		if _, ok := index[l.Kind]; !ok {
			addRule(l.Kind, "Leak", "Memory leaked ("+l.Kind+")", "An allocated block was still allocated at exit.")
		}
		exe := ""
		if p := procs[l.Pid]; p != nil {
			exe = p.Exe
		}
		sum := sha256.Sum256([]byte(baseline.Key(l)))
		res := sarifResult{
			RuleID:              "leak/" + l.Kind,
			RuleIndex:           index[l.Kind],
			Level:               severity(l.Kind),
			Message:             sarifText{summary(l, exe)},
			PartialFingerprints: map[string]string{fingerprintKey: hex.EncodeToString(sum[:16])},
			Properties: sarifResultProperties{Kind: l.Kind, Bytes: l.Bytes, Blocks: l.Blocks,
				IndirectBytes: l.IndirectBytes, Pid: l.Pid, Executable: exe},
		}
		if i := siteFrame(l, root); i >= 0 {
			res.Locations = []sarifLocation{frameLocation(&l.Frames[i], root)}
		} else if len(l.Frames) > 0 && l.Frames[0].Module != "" {
			// With no source file, the object still tells a reader
			// which component to look at, and code scanning drops
			// results that have no location at all.
			loc := frameLocation(&l.Frames[0], root)
			loc.PhysicalLocation = &sarifPhysical{ArtifactLocation: artifact(l.Frames[0].Module, root)}
			res.Locations = []sarifLocation{loc}
		} else if exe != "" {
			res.Locations = []sarifLocation{{PhysicalLocation: &sarifPhysical{ArtifactLocation: artifact(exe, root)}}}
		}
		if len(l.Frames) > 0 {
			st := sarifStack{Message: sarifText{"allocation stack"}}
			for i := range l.Frames {
				st.Frames = append(st.Frames, sarifFrame{Location: frameLocation(&l.Frames[i], root), Module: l.Frames[i].Module})
			}
			res.Stacks = []sarifStack{st}
		}
		run.Results = append(run.Results, res)
	}
	if root != "" {
		run.OriginalURIBaseIDs = map[string]sarifArtifactLoc{
			srcRootID: {URI: fileURI(root) + "/"},
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(sarifLog{Schema: sarifSchema, Version: sarifVersion, Runs: []sarifRun{run}})
}

func frameLocation(f *report.Frame, root string) sarifLocation {
	var loc sarifLocation
	if f.File != "" {
		loc.PhysicalLocation = &sarifPhysical{ArtifactLocation: artifact(f.File, root)}
		if f.Line > 0 {
			loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Line}
		}
	}
	if fn := functionName(f); fn != "??" {
		loc.LogicalLocations = []sarifLogical{{FullyQualifiedName: fn, Kind: "function"}}
	} else {
		loc.Message = &sarifText{fmt.Sprintf("0x%x", f.Address)}
	}
	return loc
}

func artifact(file, root string) sarifArtifactLoc {
	if rel, ok := relative(file, root); ok {
		return sarifArtifactLoc{URI: escapePath(rel), URIBaseID: srcRootID}
	}
	if path.IsAbs(file) {
		return sarifArtifactLoc{URI: fileURI(file)}
	}
	return sarifArtifactLoc{URI: escapePath(filepath.ToSlash(file))}
}

func fileURI(p string) string {
	return "file://" + escapePath(filepath.ToSlash(p))
}

// escapePath percent-encodes each segment, since SARIF URIs must be valid
// URI references even for file names with spaces or '#'.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
