// Ending a session destroys its VM and disk, so the confirmation first asks git in the VM for
// work that only lives there: uncommitted changes and commits no remote has.

import { Session } from './api';
import { confirmDialog } from './dialogs';
import { describeWork, unsavedWork } from './git';

/** Asks before ending `s` (`verb`: the page's word for it); resolves true to go ahead. */
export async function confirmEnd(s: Session, verb: 'Delete' | 'End' = 'Delete'): Promise<boolean> {
  let details: string[] = [];
  let checked = s.state !== 'ready';
  if (s.state === 'ready') {
    try {
      details = (await unsavedWork(s.id, s.repo?.path)).map(describeWork);
      checked = true;
    } catch {
      // The VM did not answer: say so rather than claim there is nothing to lose.
    }
  }
  const warn = details.length > 0;
  // With auto-push the server pushes the session's repository to `mayfly/<id>` as it ends.
  const pushed = s.auto_push && s.repo?.state === 'ready' ? ` The work in ${s.repo.path} (commits, changes and new files) is pushed to the branch mayfly/${s.id} of its remote first; anything else is lost.` : '';
  return confirmDialog({
    title: warn ? `Session ${s.id} has work that is not pushed` : `${verb} session ${s.id}?`,
    message: warn
      ? `These repositories have uncommitted changes or unpushed commits. Ending the session destroys its VM and files: this work will be lost.${pushed}`
      : `Its VM, files and running programs are destroyed. This cannot be undone.${checked ? '' : ' (Could not check its repositories for unpushed work.)'}`,
    details,
    confirm: warn ? `${verb} anyway` : verb,
    danger: true,
  });
}
