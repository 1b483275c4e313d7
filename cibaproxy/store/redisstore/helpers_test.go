package redisstore_test

import "sync"

// atomicMap serialises the updates of the test's maps.
type atomicMap struct{ mu sync.Mutex }

func (m *atomicMap) put(fn func()) { m.mu.Lock(); defer m.mu.Unlock(); fn() }
func (m *atomicMap) get(fn func()) { m.mu.Lock(); defer m.mu.Unlock(); fn() }
