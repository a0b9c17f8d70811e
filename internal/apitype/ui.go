package apitype

import "time"

// UIState is the page's model: which card to show, with what, and which
// actions make sense now. The page renders it and nothing else, so every
// decision about states is made (and tested) here.
type UIState struct {
	Card    string `json:"card"`
	Printer string `json:"printer"`
	// Headline and Detail are the card's words.
	Headline string `json:"headline"`
	Detail   string `json:"detail,omitempty"`
	// NextStep says what the owner does (Klipper problems, failures).
	NextStep string `json:"next_step,omitempty"`
	// Code and ExpiresAt while a pairing code waits; MarketplaceURL is
	// where the owner enters it.
	Code           string     `json:"code,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	MarketplaceURL string     `json:"marketplace_url,omitempty"`
	Job            *UIJob     `json:"job,omitempty"`
	// Actions are the buttons to show: "pair" or "ready".
	Actions []string `json:"actions"`
	Health  string   `json:"health"`
}

// UIJob is the job a card is about.
type UIJob struct {
	ID        string  `json:"id"`
	Title     string  `json:"title"`
	State     string  `json:"state"`
	Progress  float64 `json:"progress"` // 0..1; -1 unknown
	Elapsed   float64 `json:"elapsed,omitempty"`
	Remaining float64 `json:"remaining,omitempty"`
	Thumbnail string  `json:"thumbnail,omitempty"` // URL, relative to the page
	Message   string  `json:"message,omitempty"`
}
