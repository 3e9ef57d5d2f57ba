package guancetest

import "fmt"

// Channel is a channel as channel/quick_list returns it.
type Channel struct {
	CreateAt      int64    `json:"createAt"`
	Creator       string   `json:"creator"`
	DeleteAt      int64    `json:"deleteAt"`
	Description   string   `json:"description"`
	ID            int64    `json:"id"`
	Name          string   `json:"name"`
	NotifyTarget  []string `json:"notifyTarget"`
	Status        int      `json:"status"`
	SubscribeType string   `json:"subscribeType"`
	UpdateAt      int64    `json:"updateAt"`
	Updator       string   `json:"updator"`
	UUID          string   `json:"uuid"`
	WorkspaceUUID string   `json:"workspaceUUID"`
}

// Level is an issue level as issue-level/list returns it.
type Level struct {
	UUID          string `json:"uuid"`
	Name          string `json:"name"`
	Color         string `json:"color"`
	Description   string `json:"description"`
	IsDefault     bool   `json:"isDefault"`
	CreateAt      int64  `json:"createAt"`
	UpdateAt      int64  `json:"updateAt"`
	DeleteAt      int64  `json:"deleteAt"`
	WorkspaceUUID string `json:"workspaceUUID"`
}

// AddChannel adds a channel and returns it.
func (s *Server) AddChannel(name string) Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	id := s.nextSeq()
	c := Channel{
		CreateAt: now, Creator: s.person(DefaultPerson), DeleteAt: -1, ID: id, Name: name,
		NotifyTarget: []string{}, UpdateAt: now, Updator: s.person(DefaultPerson),
		UUID: fmt.Sprintf("chan_%06d", id), WorkspaceUUID: WorkspaceUUID,
	}
	s.channels = append(s.channels, c)
	return c
}

// AddLevel adds a custom level (issl_…) and returns it.
func (s *Server) AddLevel(name, color string) Level {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	l := Level{
		UUID: fmt.Sprintf("issl_%06d", s.nextSeq()), Name: name, Color: color,
		CreateAt: now, UpdateAt: now, DeleteAt: -1, WorkspaceUUID: WorkspaceUUID,
	}
	s.levels = append(s.levels, l)
	return l
}

// channel finds a channel by uuid or name; s.mu is held.
func (s *Server) channel(ref string) (Channel, bool) {
	for _, c := range s.channels {
		if c.UUID == ref || c.Name == ref {
			return c, true
		}
	}
	return Channel{}, false
}

// level finds a level by uuid; s.mu is held.
func (s *Server) level(uuid string) (Level, bool) {
	for _, l := range s.levels {
		if l.UUID == uuid {
			return l, true
		}
	}
	return Level{}, false
}
