"""Build the demo dataset (train.jsonl, heldout.jsonl) from the hand-written cards below.

Every card was written for LoRA Studio. The behaviour it teaches is the "answer card": a one-line
answer, two or three key points and a confidence word. Run ``python resources/demo/build.py`` after
editing the cards; it checks each card against ``studio.evaluate.FORMAT_PATTERN`` and rewrites both
files (the generated files are committed, so the build is only needed after an edit).

Card syntax: blocks separated by blank lines; ``Q:`` the question, ``A:`` the one-sentence answer,
``- `` two or three key points, ``C:`` high, medium or low; ``S:`` (optional, first) a system message.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing

from studio.evaluate import FORMAT_PATTERN, FORMAT_REGEX  # noqa: E402

TRAIN = HERE / "train.jsonl"
HELDOUT = HERE / "heldout.jsonl"
SEED = 20261122

CARDS = """
Q: Why is the sky blue?
A: Sunlight scatters off air molecules, and blue light scatters the most.
- Shorter wavelengths scatter more strongly.
- This is called Rayleigh scattering.
- At sunset light crosses more air, so reds dominate.
C: high

Q: What is the boiling point of water at sea level?
A: Water boils at 100 °C (212 °F) at sea level.
- Lower air pressure at altitude lowers the boiling point.
- Dissolved salt raises it only slightly.
C: high

Q: How many bones are in the adult human body?
A: An adult human has 206 bones.
- Babies are born with around 270 that partly fuse.
- Counts vary slightly between people.
C: high

Q: What is photosynthesis?
A: Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.
- It happens mainly in the leaves.
- Chlorophyll absorbs the light energy.
C: high

Q: Why do we have seasons?
A: Seasons happen because Earth's axis is tilted about 23.5 degrees.
- The tilt changes how directly sunlight hits each hemisphere.
- Distance from the Sun is not the main cause.
C: high

Q: What is the speed of light?
A: Light travels at about 299,792 km per second in a vacuum.
- That is roughly 186,000 miles per second.
- Sunlight takes about 8 minutes to reach Earth.
C: high

Q: What is DNA?
A: DNA is the molecule that carries the genetic instructions of living things.
- It is shaped like a double helix.
- Its bases pair as A with T and C with G.
- Genes are stretches of DNA that code for proteins.
C: high

Q: How far away is the Moon?
A: The Moon is about 384,400 km from Earth on average.
- The distance varies because its orbit is elliptical.
- That is roughly 30 Earth diameters.
C: high

Q: What causes ocean tides?
A: Tides are caused mainly by the Moon's gravity pulling on Earth's oceans.
- The Sun adds a smaller effect.
- Most coasts get two high tides a day.
C: high

Q: What is an atom made of?
A: An atom is made of protons, neutrons and electrons.
- Protons and neutrons form the nucleus.
- Electrons occupy the space around the nucleus.
C: high

Q: Why does ice float on water?
A: Ice floats because it is less dense than liquid water.
- Frozen water molecules form an open crystal lattice.
- This keeps lakes from freezing solid from the bottom.
C: high

Q: What is the largest planet in our solar system?
A: Jupiter is the largest planet in our solar system.
- It is a gas giant made mostly of hydrogen and helium.
- More than 1,300 Earths could fit inside it.
C: high

Q: How many planets are in the solar system?
A: There are eight planets in our solar system.
- Pluto was reclassified as a dwarf planet in 2006.
- The four inner planets are rocky.
- The four outer planets are giants.
C: high

Q: What is gravity?
A: Gravity is the attraction between objects that have mass.
- More mass means a stronger pull.
- Einstein described it as the curving of spacetime.
- Newton described it in 1687.
C: high

Q: What is the chemical symbol for gold?
A: The chemical symbol for gold is Au.
- It comes from the Latin word aurum.
- Gold's atomic number is 79.
- Silver's symbol is Ag.
C: high

Q: Why do leaves change colour in autumn?
A: Leaves change colour when trees stop making green chlorophyll.
- Yellow and orange pigments were there all along.
- Reds come from pigments made in autumn.
C: high

Q: What is the difference between weather and climate?
A: Weather is the short-term state of the air, while climate is its long-term average.
- Weather changes hour to hour.
- Climate is usually measured over 30 years or more.
C: high

Q: How do vaccines work?
A: Vaccines train the immune system to recognise a germ without causing the disease.
- They show the body a harmless part or version of the germ.
- Memory cells then respond faster to a real infection.
C: high

Q: Which planet is the hottest?
A: Venus is the hottest planet in our solar system.
- Its thick carbon dioxide atmosphere traps heat.
- Its surface is about 465 °C.
C: high

Q: What is absolute zero?
A: Absolute zero is the lowest possible temperature, 0 kelvin or -273.15 °C.
- Particles have the least possible motion there.
- It cannot actually be reached.
C: high

Q: How does a rainbow form?
A: A rainbow forms when sunlight is refracted and reflected inside raindrops.
- Each colour bends by a slightly different amount.
- You see one with the Sun behind you.
C: high

Q: What is the most common gas in Earth's atmosphere?
A: Nitrogen is the most common gas, at about 78 percent of the air.
- Oxygen makes up about 21 percent.
- Argon is nearly 1 percent.
C: high

Q: What is a light-year?
A: A light-year is the distance light travels in one year.
- It is about 9.46 trillion kilometres.
- It measures distance, not time.
C: high

Q: Why is the ocean salty?
A: The ocean is salty because rivers carry dissolved minerals into it.
- Evaporation removes water but leaves the salt behind.
- Seawater is about 3.5 percent salt.
C: high

Q: What is the pH of pure water?
A: Pure water has a pH of 7 at 25 °C.
- That is neutral.
- Below 7 is acidic and above 7 is basic.
C: high

Q: How many chromosomes do humans have?
A: Humans normally have 46 chromosomes, in 23 pairs.
- One set comes from each parent.
- The 23rd pair includes the sex chromosomes.
C: high

Q: What was the Big Bang?
A: The Big Bang is the expansion of the universe from a hot, dense state.
- It began about 13.8 billion years ago.
- The cosmic microwave background is key evidence.
C: high

Q: What is a black hole?
A: A black hole is a region where gravity is so strong that not even light escapes.
- Many form when massive stars collapse.
- Its boundary is called the event horizon.
C: high

Q: Why do cats purr?
A: Cats purr mostly when content, but also when stressed or in pain.
- The sound comes from fast twitches of the larynx muscles.
- Some research suggests purring may aid healing.
C: medium

Q: What is the smallest unit of life?
A: The cell is the smallest unit of life.
- Bacteria are made of a single cell.
- Humans have trillions of cells.
- Robert Hooke named cells in 1665.
C: high

Q: What is friction?
A: Friction is the force that resists surfaces sliding against each other.
- Rough surfaces usually create more friction.
- It turns motion energy into heat.
- Lubricants such as oil reduce it.
C: high

Q: How does a magnet work?
A: A magnet works because the tiny magnetic fields of its atoms line up together.
- Every magnet has a north and a south pole.
- Opposite poles attract and like poles repel.
C: high

Q: What is the difference between a virus and a bacterium?
A: Bacteria are living cells, while viruses need a host cell to reproduce.
- Antibiotics can treat bacteria but not viruses.
- Viruses are much smaller than bacteria.
C: high

Q: What is Earth's core made of?
A: Earth's core is made mostly of iron and nickel.
- The outer core is liquid.
- The inner core is solid because of immense pressure.
C: high

Q: How old is the Earth?
A: Earth is about 4.54 billion years old.
- The age comes from radiometric dating of rocks and meteorites.
- The uncertainty is about 50 million years.
C: high

Q: At what temperature does water freeze in Fahrenheit?
A: Water freezes at 32 °F.
- That equals 0 °C.
- Salt water freezes at a lower temperature.
- Water boils at 212 °F.
C: high

Q: Why do we see lightning before we hear thunder?
A: Light travels far faster than sound, so the flash arrives first.
- Sound covers about 1 km in 3 seconds.
- Counting the gap gives the storm's rough distance.
C: high

Q: What is a chemical element?
A: An element is a substance made of only one kind of atom.
- Each element has its own number of protons.
- There are 118 known elements.
C: high

Q: What is the closest star to Earth?
A: The Sun is the closest star to Earth.
- The next closest is Proxima Centauri.
- Proxima is about 4.24 light-years away.
C: high

Q: How do plants get water?
A: Plants absorb water through their roots.
- Water rises through tubes called xylem.
- Evaporation from the leaves pulls it upward.
- Roots also take up minerals.
C: high

Q: What is kinetic energy?
A: Kinetic energy is the energy an object has because it is moving.
- It equals half the mass times the speed squared.
- Doubling the speed quadruples it.
C: high

Q: Is there life on Mars?
A: No life has been found on Mars so far.
- Mars once had liquid water on its surface.
- Rovers are still searching for signs of past microbes.
C: medium

Q: How many moons does Earth have?
A: Earth has one natural moon.
- It is simply called the Moon.
- Small asteroids are sometimes captured for a short time.
- Mars has two small moons.
C: high

Q: What is evolution?
A: Evolution is the change in inherited traits of populations over generations.
- Natural selection favours traits that help survival.
- It explains the diversity of life.
C: high

Q: What is the Doppler effect?
A: The Doppler effect is the change in pitch when a sound source moves relative to you.
- Approaching sources sound higher.
- Receding sources sound lower.
C: high

Q: What is the hardest natural material?
A: Diamond is the hardest natural material.
- It is pure carbon in a tight crystal lattice.
- It scores 10 on the Mohs scale.
C: high

Q: How long does Earth take to orbit the Sun?
A: Earth takes about 365.25 days to orbit the Sun.
- The extra quarter day is why we have leap years.
- It moves at about 30 km per second.
C: high

Q: What are the states of matter?
A: The three everyday states of matter are solid, liquid and gas.
- Plasma is often counted as a fourth.
- Heating or cooling moves matter between states.
C: high

Q: What does a catalyst do?
A: A catalyst speeds up a chemical reaction without being used up.
- It lowers the energy needed to start the reaction.
- Enzymes are biological catalysts.
C: high

Q: Why do we yawn?
A: Scientists are still not sure why we yawn.
- One idea is that it helps cool the brain.
- Yawning is contagious between people.
C: low

Q: How many hearts does an octopus have?
A: An octopus has three hearts.
- Two pump blood through the gills.
- One pumps it to the rest of the body.
- Its blood is blue.
C: high

Q: What is the largest organ of the human body?
A: The skin is the largest organ of the human body.
- It covers about 2 square metres in adults.
- It protects against germs and water loss.
C: high

Q: What is an exoplanet?
A: An exoplanet is a planet that orbits a star other than the Sun.
- Thousands have been confirmed.
- Many are found when they dim their star's light.
C: high

Q: What is static electricity?
A: Static electricity is a build-up of electric charge on a surface.
- Rubbing materials together can move electrons.
- A spark is the charge jumping away.
C: high

Q: What is the ozone layer?
A: The ozone layer is part of the stratosphere that absorbs most of the Sun's UV light.
- It lies about 15 to 35 km above the ground.
- Bans on CFCs are helping it recover.
C: high

Q: Why do stars twinkle?
A: Stars twinkle because moving air bends their light on its way to us.
- Planets twinkle less because they appear as tiny discs.
- Seen from space, stars do not twinkle.
C: high

Q: What does half-life mean?
A: A half-life is the time it takes for half of a radioactive sample to decay.
- Carbon-14 has a half-life of about 5,730 years.
- It is used to date old materials.
C: high

Q: How much of Earth's surface is covered by water?
A: About 71 percent of Earth's surface is covered by water.
- Almost all of it is salty ocean.
- Only about 3 percent of Earth's water is fresh.
C: high

Q: What is a supernova?
A: A supernova is the powerful explosion of a star.
- Massive stars explode when their core collapses.
- Supernovae spread heavy elements through space.
C: high

Q: How does sound travel?
A: Sound travels as vibrations passing through a medium such as air or water.
- It cannot travel through a vacuum.
- In air it moves about 343 metres per second.
C: high

Q: How long should I boil an egg for a soft yolk?
A: Boil a large egg for about 6 to 7 minutes for a soft, jammy yolk.
- Start timing once the egg is in boiling water.
- Cool it in cold water to stop the cooking.
C: medium

Q: How do I cook rice on the stove?
A: Simmer one part rice in about 1.5 to 2 parts water, covered, until absorbed.
- White rice takes about 15 to 18 minutes.
- Rest it for 5 minutes, then fluff it.
C: medium

Q: What temperature should chicken be cooked to?
A: Chicken is safe at an internal temperature of 74 °C (165 °F).
- Check the thickest part with a thermometer.
- Clear juices are not a reliable test.
C: high

Q: How do I stop pasta from sticking together?
A: Use plenty of boiling water and stir during the first two minutes.
- Oil in the water does not help much.
- Toss drained pasta with sauce right away.
C: high

Q: What can I use instead of eggs in baking?
A: Mashed banana, applesauce or a flax egg can replace eggs in many bakes.
- A flax egg is 1 tablespoon ground flax plus 3 tablespoons water.
- Results vary by recipe.
C: medium

Q: Why does bread dough need to rise?
A: Rising lets yeast fill the dough with gas, which makes the bread light.
- Yeast eats sugars and releases carbon dioxide.
- Gluten traps the gas bubbles.
C: high

Q: How do I make a basic vinaigrette?
A: Whisk about three parts oil with one part vinegar, then season.
- Add salt, pepper and a little mustard.
- Mustard helps the dressing stay mixed.
C: high

Q: How can I tell if an egg is fresh?
A: Put it in a bowl of water: a fresh egg sinks and lies flat.
- An egg that stands on end is older but usually fine.
- An egg that floats should be thrown away.
C: medium

Q: What does it mean to sauté?
A: To sauté is to cook food quickly in a little fat over fairly high heat.
- Keep the food moving in the pan.
- A crowded pan steams instead of browning.
C: high

Q: How long does cooked rice keep in the fridge?
A: Eat refrigerated cooked rice within a day if you can, and no later than a few days.
- Chill it within an hour of cooking.
- Reheat it until steaming hot, and only once.
C: medium

Q: Why do onions make you cry?
A: Cutting an onion releases a gas that irritates your eyes.
- Your eyes make tears to wash it away.
- Chilling the onion or using a sharp knife helps.
C: high

Q: How do I caramelise onions?
A: Cook sliced onions slowly in butter or oil over low heat for 30 to 45 minutes.
- Stir now and then so they brown evenly.
- A pinch of salt helps draw out moisture.
C: high

Q: What is the difference between baking soda and baking powder?
A: Baking soda needs an acid to react, while baking powder already contains one.
- Baking soda is pure sodium bicarbonate.
- Baking powder is soda plus a dry acid and starch.
C: high

Q: How do I make a good cup of black tea?
A: Pour freshly boiled water over the tea and steep it for 3 to 5 minutes.
- Green tea prefers cooler water, about 80 °C.
- Remove the bag before adding milk.
C: high

Q: How do I keep a cut avocado from turning brown?
A: Brush it with lemon or lime juice and wrap it tightly.
- Browning is caused by oxygen.
- Keeping the pit in does little on its own.
C: medium

Q: How much salt should I add to pasta water?
A: About 1 tablespoon of salt for 4 litres of water is a common guide.
- The water should taste pleasantly salty.
- Add the salt once the water boils.
C: medium

Q: What is umami?
A: Umami is the savoury taste, one of the five basic tastes.
- It comes mainly from glutamate.
- Parmesan, mushrooms and soy sauce are rich in it.
C: high

Q: How do I sharpen a kitchen knife?
A: Draw the blade across a whetstone at a steady angle of about 15 to 20 degrees.
- Sharpen both sides evenly.
- Hone the edge with a steel between sharpenings.
C: high

Q: Can I freeze bread?
A: Yes, bread freezes well for up to about three months.
- Slice it first so you can toast pieces as needed.
- Wrap it tightly to prevent freezer burn.
C: high

Q: How do I make scrambled eggs soft and fluffy?
A: Whisk the eggs well and cook them gently over low heat, stirring.
- Take them off the heat while still slightly wet.
- A knob of butter adds richness.
C: medium

Q: What is the best oil for deep frying?
A: Neutral oils with a high smoke point, like peanut, canola or sunflower, work best.
- Aim for about 175 to 190 °C.
- Strain and reuse the oil a few times.
C: medium

Q: How long should a steak rest after cooking?
A: Rest a steak for about 5 to 10 minutes before slicing it.
- Resting lets the juices settle.
- Cover it loosely with foil to keep it warm.
C: medium

Q: Why did my cake sink in the middle?
A: A cake usually sinks because it was underbaked or the oven door was opened too early.
- Too much raising agent can also cause it.
- Test with a skewer before taking it out.
C: medium

Q: How do I cook dried beans?
A: Soak dried beans overnight, then simmer them until tender, usually 1 to 2 hours.
- Drain the soaking water first.
- Boil red kidney beans hard for 10 minutes.
C: high

Q: What does "al dente" mean?
A: Al dente means pasta cooked until tender but still firm to the bite.
- It is Italian for "to the tooth".
- Taste a piece a minute before the packet time.
C: high

Q: How do I thicken a sauce?
A: Stir in a slurry of cornflour and cold water, then simmer briefly.
- A roux of flour and butter also works.
- Simmering uncovered thickens it by reduction.
C: high

Q: Is it safe to eat raw cookie dough?
A: It is not considered safe, because raw flour and raw eggs can carry bacteria.
- E. coli and Salmonella are the main risks.
- Heat-treated flour and no eggs make it safer.
C: high

Q: How should I store fresh herbs?
A: Keep basil in a glass of water on the counter and wrap hardy herbs in damp paper in the fridge.
- Trim the stems first.
- Basil dislikes the cold.
C: medium

Q: What is the Maillard reaction?
A: The Maillard reaction is the browning of food when proteins and sugars react in heat.
- It gives seared meat and toast their flavour.
- It speeds up above about 140 °C.
C: high

Q: How do I peel garlic quickly?
A: Crush the clove lightly with the flat of a knife and the skin slips off.
- Trim the root end first.
- Shaking cloves in a closed jar also works.
C: high

Q: How do I make whipped cream?
A: Whisk cold double cream until soft peaks form.
- Add a little sugar near the end.
- Stop before it turns grainy and becomes butter.
C: high

Q: How long does it take to bake a potato?
A: Bake a medium potato at 200 °C for about 45 to 60 minutes.
- Prick the skin first.
- It is done when a knife slides in easily.
C: medium

Q: What is the difference between stock and broth?
A: Stock is made mainly from bones, while broth is made mainly from meat.
- Stock is richer in gelatin.
- Broth is usually seasoned to drink on its own.
C: medium

Q: Why add salt to bread dough?
A: Salt adds flavour and strengthens the gluten in bread dough.
- It also slows the yeast slightly.
- About 2 percent of the flour weight is typical.
C: high

Q: How do I fry an egg well?
A: Cook the egg in a little hot butter over medium-low heat until the white sets.
- Cover the pan to firm the top.
- Season just before serving.
C: medium

Q: How do I know when frying oil is hot enough?
A: Use a thermometer, or drop in a cube of bread: it should brown in about a minute.
- Shimmering oil is ready for shallow frying.
- Smoking oil is too hot.
C: medium

Q: Can you refreeze meat that has been thawed?
A: Meat thawed in the fridge can be refrozen, though its quality may drop.
- Do not refreeze meat thawed on the counter.
- Thawed meat that you cook can be frozen again.
C: high

Q: How do I make porridge?
A: Simmer one part rolled oats with about two parts milk or water for about 5 minutes.
- Stir often so it does not stick.
- Top with fruit or honey.
C: high

Q: What is a roux?
A: A roux is flour cooked in an equal amount of fat, used to thicken sauces.
- Longer cooking makes it darker and nuttier.
- It is the base of béchamel.
C: high

Q: How long do eggs last in the fridge?
A: Fresh eggs usually keep for about 3 to 5 weeks in the fridge.
- Check the date on the carton.
- Store them in the carton, not the door.
C: medium

Q: What is RAM?
A: RAM is a computer's short-term working memory.
- It holds data for the programs that are running.
- It is cleared when the power goes off.
C: high

Q: What is the difference between HTTP and HTTPS?
A: HTTPS is HTTP encrypted with TLS.
- It protects data from eavesdroppers.
- Browsers show a padlock for HTTPS sites.
- HTTPS uses port 443 by default.
C: high

Q: How do I take a screenshot on Windows?
A: Press Windows + Shift + S to capture part of the screen.
- Print Screen copies the whole screen.
- Windows + Print Screen saves a file to Pictures.
C: high

Q: What is an IP address?
A: An IP address is a number that identifies a device on a network.
- IPv4 addresses look like 192.168.1.10.
- IPv6 exists because IPv4 addresses ran out.
C: high

Q: What does a CPU do?
A: The CPU is the chip that carries out a computer's instructions.
- It is often called the processor.
- Modern CPUs have several cores.
- Its clock speed is measured in gigahertz.
C: high

Q: What does a compiler do?
A: A compiler translates source code into a form the machine can run.
- C and Rust are usually compiled.
- It reports many errors before the program runs.
C: high

Q: How do I create a strong password?
A: Use a long passphrase of several random words, or let a password manager make one.
- Length matters more than odd symbols.
- Never reuse passwords across sites.
C: high

Q: What is a bit?
A: A bit is the smallest unit of data, either 0 or 1.
- Eight bits make one byte.
- A byte can hold 256 different values.
C: high

Q: What is open-source software?
A: Open-source software has source code that anyone can read, change and share under its license.
- Linux and Firefox are examples.
- Licenses such as MIT and Apache-2.0 set the terms.
C: high

Q: What is machine learning?
A: Machine learning is software that learns patterns from data instead of following fixed rules.
- Models improve by training on examples.
- It powers spam filters and recommendations.
C: high

Q: What is "the cloud"?
A: The cloud means using computers in remote data centres over the internet.
- You rent storage or computing instead of owning it.
- Webmail and online backups are common examples.
C: high

Q: How do I free up disk space?
A: Delete large unused files, empty the trash and uninstall apps you no longer need.
- A disk usage tool shows the biggest folders.
- Move old photos and videos to external storage.
C: high

Q: What is a VPN?
A: A VPN encrypts your internet traffic and routes it through another server.
- It hides your traffic from the local network.
- It does not make you fully anonymous.
C: high

Q: What is the difference between a list and a tuple in Python?
A: A list can be changed after it is created, while a tuple cannot.
- Lists use square brackets and tuples use parentheses.
- Tuples of hashable items can be dictionary keys.
C: high

Q: What does git commit do?
A: git commit records the staged changes as a new snapshot in the repository.
- Stage changes first with git add.
- Each commit has a message and a unique hash.
C: high

Q: What is a database?
A: A database is an organised store of data that software can query and update.
- Relational databases use tables and SQL.
- PostgreSQL and SQLite are examples.
C: high

Q: Why is my computer so slow?
A: A slow computer is often caused by too many running programs, low memory or a full disk.
- Check the task manager for heavy processes.
- Restarting clears many temporary slowdowns.
C: medium

Q: What is an algorithm?
A: An algorithm is a precise, step-by-step procedure for solving a problem.
- A recipe is an everyday example.
- Good algorithms are correct and efficient.
C: high

Q: What is binary?
A: Binary is a number system that uses only the digits 0 and 1.
- Each position is a power of two.
- 101 in binary equals 5.
C: high

Q: What does DNS do?
A: DNS translates domain names like example.com into IP addresses.
- It works like the internet's phone book.
- Devices cache answers to speed things up.
C: high

Q: How do I reverse a string in Python?
A: Use slicing with a step of -1, as in text[::-1].
- It returns a new string.
- "".join(reversed(text)) also works.
C: high

Q: What is phishing?
A: Phishing is a scam that tricks people into giving away passwords or money.
- It often arrives as a fake email or text.
- Check the sender and links before clicking.
C: high

Q: What is two-factor authentication?
A: Two-factor authentication asks for a second proof of identity besides your password.
- The second factor is often a code from an app.
- It stops most account takeovers.
C: high

Q: What is an SSD?
A: An SSD is a storage drive that uses flash memory instead of spinning disks.
- It is much faster than a hard drive.
- It has no moving parts.
C: high

Q: What is a GPU used for?
A: A GPU runs many simple calculations in parallel, mainly to draw graphics.
- Games rely on it to render frames.
- It is also used to train AI models.
C: high

Q: What is Linux?
A: Linux is a free, open-source operating system kernel.
- Linus Torvalds first released it in 1991.
- Android and most web servers run on it.
C: high

Q: What is a cookie in web browsing?
A: A cookie is a small piece of data a website stores in your browser.
- Cookies keep you logged in.
- Third-party cookies can track you across sites.
C: high

Q: What does "404 Not Found" mean?
A: A 404 error means the server could not find the page you asked for.
- The link may be broken or mistyped.
- The server itself is working.
C: high

Q: How should I back up my files?
A: Keep copies on an external drive and in a cloud service.
- The 3-2-1 rule: three copies, two kinds of media, one offsite.
- Test restoring a file now and then.
C: high

Q: What is a programming language?
A: A programming language is a formal language for giving instructions to a computer.
- Python, JavaScript and C are popular ones.
- Each has its own syntax and rules.
C: high

Q: What is the difference between RAM and storage?
A: RAM holds data for running programs, while storage keeps files permanently.
- RAM is faster but loses its data without power.
- Storage is larger and slower.
C: high

Q: What is a firewall?
A: A firewall filters network traffic according to security rules.
- It can block unwanted incoming connections.
- It can be software or a hardware device.
- Most routers include one.
C: high

Q: What is recursion in programming?
A: Recursion is when a function calls itself to solve smaller parts of a problem.
- It needs a base case to stop.
- Walking a tree is a classic use.
C: high

Q: What is a software bug?
A: A bug is a mistake in software that makes it behave incorrectly.
- Debugging means finding and fixing it.
- Tests help catch bugs early.
C: high

Q: Who invented the World Wide Web?
A: Tim Berners-Lee invented the World Wide Web in 1989.
- He was working at CERN at the time.
- The first website went online in 1991.
C: high

Q: What is Moore's law?
A: Moore's law is the observation that transistor counts on chips double about every two years.
- Gordon Moore described the trend in 1965.
- The pace has slowed in recent years.
C: high

Q: What is an API?
A: An API is a defined way for programs to talk to each other.
- It lists the requests you can make and the replies.
- Web APIs often exchange JSON.
C: high

Q: What is JSON?
A: JSON is a simple text format for structured data.
- Objects use braces and lists use brackets.
- Nearly every programming language can read it.
- Its name means JavaScript Object Notation.
C: high

Q: How do I clear my browser cache?
A: Open the browser's privacy or history settings and clear cached images and files.
- Ctrl + Shift + Delete opens it in most browsers.
- Clearing cookies too will log you out of sites.
C: high

Q: What is a pixel?
A: A pixel is the smallest dot of colour in a digital image or screen.
- Screens mix red, green and blue in each pixel.
- More pixels mean finer detail.
C: high

Q: What is encryption?
A: Encryption scrambles data so that only someone with the key can read it.
- HTTPS and messaging apps use it.
- Strong encryption cannot be broken by guessing.
C: high

Q: Will AI replace programmers?
A: Nobody knows, but for now AI is changing programming work more than replacing it.
- AI tools already write routine code.
- People still define problems and check results.
C: low

Q: What is the difference between Wi-Fi and the internet?
A: Wi-Fi links your device to a local router, while the internet is the global network beyond it.
- You can have Wi-Fi with no internet access.
- The router connects the two.
C: high

Q: What is a loop in programming?
A: A loop repeats a block of code while a condition holds or for each item in a collection.
- Common forms are for and while loops.
- A loop that never stops is an infinite loop.
C: high

Q: What is a file extension?
A: A file extension is the ending after the dot that hints at a file's type.
- Examples are .pdf, .jpg and .txt.
- Renaming it does not convert the file.
C: high

Q: Why should I keep my software updated?
A: Updates fix security holes and bugs.
- Attackers target known, unpatched flaws.
- Updates may also add features.
- Turn on automatic updates where you can.
C: high

Q: What is a spreadsheet?
A: A spreadsheet is a grid of cells for organising and calculating data.
- Formulas update when their inputs change.
- Excel and LibreOffice Calc are examples.
C: high

Q: How do I find a lost file on my computer?
A: Use the search box in the taskbar or Finder and type part of the file name.
- Sort by date modified to find recent files.
- You can also search for words inside files.
C: medium

Q: What was the first programmable computer?
A: Konrad Zuse's Z3 of 1941 is often called the first programmable computer.
- ENIAC of 1945 was the first general-purpose electronic one.
- The answer depends on the definition used.
C: medium

Q: What are the keyboard shortcuts for copy and paste?
A: Press Ctrl + C to copy and Ctrl + V to paste.
- On a Mac, use Command instead of Ctrl.
- Ctrl + X cuts the selection.
C: high

Q: When did World War II end?
A: World War II ended in 1945.
- Germany surrendered in May 1945.
- Japan surrendered in August and signed in September.
C: high

Q: Who was the first person to walk on the Moon?
A: Neil Armstrong was the first person to walk on the Moon, in 1969.
- He flew on NASA's Apollo 11 mission.
- Buzz Aldrin followed him onto the surface.
C: high

Q: Who built the pyramids of Giza?
A: Ancient Egyptians built the pyramids of Giza about 4,500 years ago.
- They were tombs for pharaohs such as Khufu.
- Organised teams of paid workers did most of the labour.
C: high

Q: When did the Berlin Wall fall?
A: The Berlin Wall fell on 9 November 1989.
- It had divided Berlin since 1961.
- Germany reunified in October 1990.
C: high

Q: Who wrote the Declaration of Independence?
A: Thomas Jefferson wrote the main draft of the Declaration of Independence.
- It was adopted on 4 July 1776.
- John Adams and Benjamin Franklin helped revise it.
C: high

Q: What was the Renaissance?
A: The Renaissance was a European cultural revival from about the 14th to the 17th century.
- It began in Italy.
- Leonardo and Michelangelo were leading artists.
C: high

Q: Who was Julius Caesar?
A: Julius Caesar was a Roman general and statesman who became dictator of Rome.
- He conquered Gaul.
- He was assassinated in 44 BC.
- July is named after him.
C: high

Q: When did the Titanic sink?
A: The Titanic sank on 15 April 1912.
- It hit an iceberg on its first voyage.
- More than 1,500 people died.
C: high

Q: What was the Industrial Revolution?
A: The Industrial Revolution was the shift to machine manufacturing that began in Britain around 1760.
- Steam power drove factories and railways.
- Many people moved from farms to cities.
C: high

Q: Who was Cleopatra?
A: Cleopatra VII was the last active ruler of Ptolemaic Egypt.
- She allied with Julius Caesar and Mark Antony.
- She died in 30 BC.
C: high

Q: Why did the Roman Empire fall?
A: Historians point to many causes, including invasions, economic trouble and political instability.
- The Western Empire ended in 476 AD.
- The Eastern Empire lasted until 1453.
C: medium

Q: Who invented the printing press?
A: Johannes Gutenberg developed the movable-type printing press around 1440.
- It made books far cheaper to produce.
- Movable type existed earlier in China and Korea.
C: high

Q: When did the French Revolution begin?
A: The French Revolution began in 1789.
- The Bastille was stormed on 14 July 1789.
- It ended the absolute monarchy.
C: high

Q: Who was Mahatma Gandhi?
A: Gandhi led India's independence movement using nonviolent resistance.
- India became independent in 1947.
- He was assassinated in 1948.
C: high

Q: What was the Cold War?
A: The Cold War was a rivalry between the United States and the Soviet Union from about 1947 to 1991.
- It featured an arms race and proxy wars.
- It ended when the Soviet Union dissolved.
C: high

Q: Who was the first President of the United States?
A: George Washington was the first President of the United States.
- He served from 1789 to 1797.
- He had led the Continental Army.
C: high

Q: What was the Magna Carta?
A: The Magna Carta was a 1215 charter that limited the power of the English king.
- King John agreed to it.
- It shaped later ideas of the rule of law.
C: high

Q: When did humans first fly in an airplane?
A: The Wright brothers made the first powered airplane flight in 1903.
- It took place at Kitty Hawk, North Carolina.
- The first flight lasted 12 seconds.
C: high

Q: Who discovered penicillin?
A: Alexander Fleming discovered penicillin in 1928.
- He noticed mould killing bacteria in a dish.
- Florey and Chain later turned it into a medicine.
C: high

Q: What was the Silk Road?
A: The Silk Road was a network of trade routes linking China with the Mediterranean.
- Silk, spices and ideas moved along it.
- It flourished from about 130 BC.
C: high

Q: Who was Napoleon Bonaparte?
A: Napoleon was a French military leader who crowned himself emperor in 1804.
- He conquered much of Europe.
- He was defeated at Waterloo in 1815.
C: high

Q: When did women get the vote in the United States?
A: American women won the right to vote nationwide in 1920.
- It came with the 19th Amendment.
- Some states allowed it earlier.
C: high

Q: Who was Genghis Khan?
A: Genghis Khan founded the Mongol Empire in the early 13th century.
- It became the largest contiguous land empire in history.
- He died in 1227.
C: high

Q: What started World War I?
A: World War I was triggered by the assassination of Archduke Franz Ferdinand in 1914.
- Alliances pulled many nations into the war.
- Militarism and nationalism were deeper causes.
C: high

Q: Who was Martin Luther King Jr.?
A: Martin Luther King Jr. was a leader of the American civil rights movement.
- He gave the "I Have a Dream" speech in 1963.
- He won the Nobel Peace Prize in 1964.
C: high

Q: When was the Great Wall of China built?
A: The Great Wall was built over many centuries, from about the 7th century BC to the 17th century AD.
- Most surviving parts date from the Ming dynasty.
- It is not one single wall.
C: high

Q: Who was Leonardo da Vinci?
A: Leonardo da Vinci was an Italian Renaissance painter, inventor and scientist.
- He painted the Mona Lisa.
- His notebooks sketch flying machines.
- He lived from 1452 to 1519.
C: high

Q: What was the Apollo program?
A: Apollo was the NASA program that landed people on the Moon.
- Six missions landed between 1969 and 1972.
- Twelve astronauts walked on the Moon.
C: high

Q: Who was Queen Victoria?
A: Queen Victoria ruled the United Kingdom from 1837 to 1901.
- Her reign is called the Victorian era.
- It saw rapid industrial and imperial growth.
C: high

Q: When did the Soviet Union collapse?
A: The Soviet Union dissolved in December 1991.
- It split into 15 independent countries.
- Mikhail Gorbachev resigned on 25 December.
C: high

Q: Who were the Vikings?
A: The Vikings were Scandinavian seafarers who raided, traded and settled from about 800 to 1050 AD.
- They came from Norway, Sweden and Denmark.
- They reached North America around 1000 AD.
C: high

Q: What was the Black Death?
A: The Black Death was a plague that swept Europe from 1347 to 1351.
- It killed perhaps a third to half of Europe's people.
- It was caused by the bacterium Yersinia pestis.
C: high

Q: Who was Albert Einstein?
A: Albert Einstein was a physicist best known for the theory of relativity.
- He won the 1921 Nobel Prize in Physics.
- His equation E = mc² links mass and energy.
C: high

Q: Did Vikings wear horned helmets?
A: No, there is no evidence that Vikings wore horned helmets in battle.
- The image comes from 19th-century costume design.
- The one surviving Viking helmet has no horns.
C: high

Q: Who was Marie Curie?
A: Marie Curie was a physicist and chemist who pioneered research on radioactivity.
- She discovered polonium and radium.
- She won Nobel Prizes in both physics and chemistry.
C: high

Q: When was the American Civil War?
A: The American Civil War was fought from 1861 to 1865.
- The Union fought the Confederacy.
- Slavery was the central cause.
C: high

Q: What was the Stone Age?
A: The Stone Age was the long prehistoric period when people made tools mainly from stone.
- It lasted roughly 3 million years.
- It ended as metalworking spread.
C: high

Q: Who was William Shakespeare?
A: Shakespeare was an English playwright and poet who lived from 1564 to 1616.
- He wrote Hamlet and Romeo and Juliet.
- He wrote about 38 plays.
C: high

Q: When was the Eiffel Tower built?
A: The Eiffel Tower was built from 1887 to 1889.
- It opened for the 1889 World's Fair in Paris.
- It was meant to be temporary.
C: high

Q: Who was Nelson Mandela?
A: Nelson Mandela was an anti-apartheid leader who became South Africa's first Black president.
- He spent 27 years in prison.
- He was president from 1994 to 1999.
C: high

Q: What is the capital of Australia?
A: The capital of Australia is Canberra.
- Sydney is the largest city.
- Canberra was built as a compromise between Sydney and Melbourne.
- Parliament moved there in 1927.
C: high

Q: What is the longest river in the world?
A: The Nile is usually listed as the longest river, at about 6,650 km.
- Some measurements put the Amazon slightly ahead.
- It depends on where the source is measured.
C: medium

Q: What is the tallest mountain on Earth?
A: Mount Everest is the tallest mountain above sea level, at 8,849 metres.
- It lies on the border of Nepal and China.
- Mauna Kea is taller measured from its base.
C: high

Q: How many continents are there?
A: There are usually said to be seven continents.
- Asia is the largest.
- Some systems count five or six.
- Africa is the second largest.
C: high

Q: What is the largest ocean?
A: The Pacific is the largest ocean.
- It covers about a third of Earth's surface.
- It is also the deepest.
- The Atlantic is second largest.
C: high

Q: What is the largest desert in the world?
A: Antarctica is the largest desert, because it gets very little precipitation.
- The Sahara is the largest hot desert.
- Deserts are defined by dryness, not heat.
C: high

Q: What is the capital of Canada?
A: The capital of Canada is Ottawa.
- It is in the province of Ontario.
- Toronto is the largest city.
- Parliament Hill is in Ottawa.
C: high

Q: Which country has the most people?
A: India has the largest population, having passed China around 2023.
- Each has more than 1.4 billion people.
- China's population is now shrinking.
C: high

Q: What is the smallest country in the world?
A: Vatican City is the smallest country in the world.
- It covers about 0.44 square kilometres.
- It lies inside Rome.
- The Pope is its head of state.
C: high

Q: What is the deepest point in the ocean?
A: The Challenger Deep in the Mariana Trench is the deepest known point, about 10,900 metres down.
- It is in the western Pacific.
- Only a few crewed dives have reached it.
C: high

Q: What is the capital of Japan?
A: The capital of Japan is Tokyo.
- Kyoto was the imperial capital for over a thousand years.
- Greater Tokyo is the world's largest metropolitan area.
C: high

Q: Which is the largest country by area?
A: Russia is the largest country by area.
- It covers about 17 million square kilometres.
- It spans eleven time zones.
- Canada is the second largest.
C: high

Q: What is the equator?
A: The equator is the imaginary line around Earth halfway between the poles.
- It is at 0 degrees latitude.
- It divides the Northern and Southern Hemispheres.
C: high

Q: Why is the Dead Sea called dead?
A: The Dead Sea is so salty that fish and plants cannot live in it.
- It is about nine times saltier than the ocean.
- Some microbes do survive there.
C: high

Q: What is the capital of Brazil?
A: The capital of Brazil is Brasília.
- It was built as a new capital and opened in 1960.
- Rio de Janeiro was the capital before it.
C: high

Q: What are the Northern Lights?
A: The Northern Lights are glowing curtains caused by solar particles hitting Earth's upper atmosphere.
- They are also called the aurora borealis.
- They are best seen near the Arctic Circle.
C: high

Q: What is a volcano?
A: A volcano is an opening in Earth's crust where molten rock, ash and gas escape.
- Many sit along tectonic plate boundaries.
- Hawaii's volcanoes formed over a hot spot.
C: high

Q: What causes earthquakes?
A: Most earthquakes happen when tectonic plates suddenly slip along faults.
- Stress builds until the rock breaks.
- Magnitude measures the energy released.
- Most occur near plate boundaries.
C: high

Q: What is the largest rainforest?
A: The Amazon is the world's largest tropical rainforest.
- It spans nine countries, mostly Brazil.
- It covers about 5.5 million square kilometres.
C: high

Q: How many countries are there in the world?
A: There are 195 countries by the most common count.
- That is 193 UN members plus 2 observer states.
- Some disputed territories are not counted.
C: medium

Q: What is the capital of Turkey?
A: The capital of Turkey is Ankara.
- Istanbul is the largest city.
- Ankara became the capital in 1923.
- It lies in central Anatolia.
C: high

Q: Where is Mount Kilimanjaro?
A: Mount Kilimanjaro is in Tanzania.
- At 5,895 metres it is Africa's highest peak.
- It is a dormant volcano.
C: high

Q: What is a fjord?
A: A fjord is a long, narrow sea inlet between steep cliffs, carved by glaciers.
- Norway is famous for them.
- They can be very deep.
C: high

Q: What is the Ring of Fire?
A: The Ring of Fire is a belt of volcanoes and earthquakes around the Pacific Ocean.
- It follows tectonic plate boundaries.
- It holds about three quarters of Earth's active volcanoes.
C: high

Q: Which country has the most time zones?
A: France has the most time zones, 12, thanks to its overseas territories.
- Russia has 11.
- Mainland France uses only one.
C: medium

Q: What is the Great Barrier Reef?
A: The Great Barrier Reef is the world's largest coral reef system, off northeastern Australia.
- It stretches about 2,300 km.
- Warming seas cause coral bleaching there.
C: high

Q: What language do people speak in Brazil?
A: The official language of Brazil is Portuguese.
- It comes from Portuguese colonisation.
- Brazil is the largest Portuguese-speaking country.
- Brazilian Portuguese differs slightly from European Portuguese.
C: high

Q: What is the capital of Egypt?
A: The capital of Egypt is Cairo.
- It lies on the Nile.
- A new administrative capital is being built to the east.
- The pyramids of Giza are nearby.
C: high

Q: What is the Sahara?
A: The Sahara is the largest hot desert, covering much of North Africa.
- It is about the size of the United States.
- It was green during wet periods thousands of years ago.
C: high

Q: What is the highest waterfall in the world?
A: Angel Falls in Venezuela is the highest waterfall, with a total drop of 979 metres.
- Its longest single drop is 807 metres.
- It is named after the pilot Jimmie Angel.
C: high

Q: How do I remove a coffee stain from a shirt?
A: Rinse the stain from the back with cold water, then rub in detergent before washing.
- Act quickly for the best result.
- Hot water can set the stain.
C: medium

Q: How do I unclog a sink?
A: Try a plunger first, then clean out the trap under the sink if needed.
- Hot water can shift grease.
- Never mix chemical drain cleaners.
C: medium

Q: How do I change a flat tyre?
A: Loosen the nuts, jack up the car, swap the wheel, then tighten the nuts in a star pattern.
- Park on flat ground with the handbrake on.
- Check the spare's pressure afterwards.
C: high

Q: How often should I water houseplants?
A: Water most houseplants when the top few centimetres of soil feel dry.
- Succulents need water less often.
- Overwatering kills more plants than underwatering.
C: medium

Q: How can I fall asleep faster?
A: Keep a regular schedule and a dark, cool room, and avoid screens before bed.
- Cut caffeine after early afternoon.
- If awake for 20 minutes, get up for a while.
C: medium

Q: How do I tie a tie?
A: The four-in-hand is the simplest knot: cross, wrap once, go up through the neck loop and down through the front.
- Start with the wide end longer.
- The tip should reach your belt.
C: high

Q: How do I get rid of fruit flies?
A: Set a trap of cider vinegar with a drop of dish soap in a small bowl.
- Remove overripe fruit.
- Empty and rinse the bins.
C: medium

Q: How do I iron a shirt?
A: Iron the collar first, then the cuffs and sleeves, and finally the body.
- Use the heat setting on the care label.
- A slightly damp shirt is easier to iron.
C: medium

Q: How can I save money on groceries?
A: Plan your meals, shop with a list and buy store brands.
- Compare unit prices on shelf labels.
- Avoid shopping when hungry.
- Freeze leftovers instead of throwing them away.
C: medium

Q: How do I clean a microwave?
A: Heat a bowl of water with lemon or vinegar for a few minutes, then wipe the inside.
- The steam loosens dried food.
- Wash the turntable separately.
C: high

Q: How do I jump-start a car?
A: Connect red to both positive terminals, then black from the good battery's negative to bare metal on the dead car.
- Start the working car first.
- Remove the cables in reverse order.
C: high

Q: How do I remove a splinter?
A: Clean the area, then pull the splinter out with clean tweezers at the angle it went in.
- A clean needle can lift the end.
- See a doctor if it is deep or infected.
C: high

Q: How can I boil water faster?
A: Put a lid on the pot and heat only as much water as you need.
- An electric kettle is usually quickest.
- Salt does not make it boil faster.
C: high

Q: How do I stop a nosebleed?
A: Sit up, lean forward and pinch the soft part of your nose for 10 to 15 minutes.
- Do not tilt your head back.
- Get help if it lasts more than 20 minutes.
C: high

Q: How can I make my phone battery last longer?
A: Lower the screen brightness and stop apps from using location in the background.
- Turn on battery saver mode.
- Avoid leaving the phone in heat.
C: medium

Q: How do I fold a fitted sheet?
A: Tuck the corners into each other, lay the sheet flat and fold it into a rectangle.
- Pair the corners along the short edges.
- Fold the elastic edges inward.
C: medium

Q: How do I write a good cover letter?
A: Keep it to one page and show how your skills match the specific job.
- Open with the role you want.
- Give one or two concrete achievements.
C: medium

Q: How do I get a stripped screw out?
A: Press a wide rubber band between the screwdriver and the screw for extra grip.
- A screw extractor bit works for stubborn cases.
- Turn slowly with firm pressure.
C: medium

Q: How should I prepare for a job interview?
A: Research the company, practise common questions and prepare examples of your work.
- Have questions ready to ask them.
- Plan your route or test your video setup.
C: medium

Q: How do I clean a cast iron pan?
A: Wash it with hot water and a brush, dry it fully and wipe on a thin layer of oil.
- A little soap is fine.
- Never leave it soaking.
C: high

Q: How do I get chewing gum off clothes?
A: Freeze the garment until the gum hardens, then scrape it off.
- Put it in a bag in the freezer for an hour.
- Treat any residue with a stain remover.
C: high

Q: What can I do to calm down when I feel anxious?
A: Slow your breathing, for example in for four counts and out for six.
- Name things you can see and hear.
- Talk to a professional if anxiety persists.
C: medium

Q: How do I defrost a freezer?
A: Switch it off, empty it and let the ice melt, with towels underneath.
- Bowls of hot water inside speed it up.
- Never chip ice with sharp tools.
C: high

Q: How much water should I drink a day?
A: Many adults need about 2 to 3 litres of fluid a day, including water from food.
- Needs rise with heat and exercise.
- Pale yellow urine suggests you are drinking enough.
C: medium

Q: How do I start running?
A: Begin with short run-walk intervals three times a week and build up slowly.
- Add no more than about 10 percent distance a week.
- Comfortable shoes help prevent injury.
C: medium

Q: How do I hang a picture on the wall?
A: Mark the spot, use a hook or screw that suits your wall, and check it is level.
- Use a stud or wall anchors for heavy frames.
- Hang art at about eye level.
C: high

Q: How do I make a monthly budget?
A: List your monthly income, then assign amounts to fixed costs, savings and spending.
- Track your spending for a month first.
- The 50/30/20 rule is a simple start.
C: medium

Q: How do I get rid of hiccups?
A: Try holding your breath briefly or sipping cold water slowly.
- Most hiccups stop on their own within minutes.
- See a doctor if they last more than two days.
C: medium

Q: How should I clean my glasses?
A: Rinse them in lukewarm water, wash them with a drop of dish soap and dry them with a microfibre cloth.
- Paper towels can scratch the lenses.
- Avoid household glass cleaners.
C: high

Q: How do I stop my shoes from smelling?
A: Let shoes dry fully between wears and sprinkle baking soda inside overnight.
- Wear moisture-wicking socks.
- Wash the insoles regularly.
C: medium

Q: How can I improve my memory?
A: Sleep well, exercise regularly and review new material in spaced sessions.
- Testing yourself beats rereading.
- Linking new facts to known ones helps.
C: medium

Q: How do I descale a kettle?
A: Boil a mix of half water and half white vinegar, let it stand, then rinse well.
- Citric acid or lemon juice also works.
- Boil plain water once to clear the taste.
C: high

Q: How do I sew on a button?
A: Stitch through the holes several times, then wind the thread under the button and knot it.
- Leave a little slack so the button sits loosely.
- Use thread that matches the fabric.
C: high

Q: How do I keep cut flowers fresh longer?
A: Trim the stems at an angle and change the water every two days.
- Remove leaves below the waterline.
- Keep them away from ripening fruit.
C: high

Q: How do I check my tyre pressure?
A: Remove the valve cap, press a gauge onto the valve and read the number.
- Check when the tyres are cold.
- The right pressure is on a label inside the driver's door.
C: high

Q: What is the best way to learn a new language?
A: Practise a little every day, mixing listening, speaking and vocabulary review.
- Spaced repetition apps help words stick.
- Speaking with others builds confidence.
C: medium

Q: How do I make my own cleaning spray?
A: Mix equal parts white vinegar and water in a spray bottle.
- Do not use it on stone countertops.
- Never mix vinegar with bleach.
C: high

Q: How do I treat a minor burn?
A: Cool the burn under cool running water for 20 minutes.
- Do not use ice or butter.
- Cover it loosely with cling film or a clean dressing.
C: high

Q: How can I get better at public speaking?
A: Practise out loud several times and know your opening lines well.
- Slow down and pause.
- Record yourself to spot habits.
- Start with small, friendly audiences.
C: medium

Q: How do I remove rust from tools?
A: Soak rusty tools in white vinegar overnight, then scrub them with steel wool.
- Rinse and dry them completely.
- A light coat of oil prevents new rust.
C: high

Q: How do I wash a wool sweater?
A: Hand wash it in cool water with wool detergent, then dry it flat.
- Do not wring or twist it.
- Heat and rubbing cause felting.
C: high

Q: How do I memorise a speech?
A: Learn it section by section with key words as cues, and rehearse it aloud.
- Practise in the real room if you can.
- Aim to know the ideas, not every word.
C: medium

Q: How long should I brush my teeth?
A: Brush your teeth for two minutes, twice a day.
- Use fluoride toothpaste.
- Replace your brush every three months.
- Clean between your teeth daily.
C: high

Q: How do I set up a new Wi-Fi router?
A: Connect the router to your modem, then use its setup page or app to name the network and set a password.
- Change the default admin password.
- Choose WPA3 or WPA2 security.
C: high

Q: How do I get a stuck ring off my finger?
A: Coat the finger with soap or oil, raise your hand and gently twist the ring off.
- Cold water reduces swelling.
- Get help if the finger changes colour.
C: high

Q: How do I start a compost pile?
A: Layer green scraps like vegetable peelings with brown material like dry leaves, and keep it damp.
- Turn it every week or two.
- Leave out meat and dairy.
C: high

Q: How can I wake up earlier?
A: Move your bedtime and alarm 15 minutes earlier every few days.
- Get bright light soon after waking.
- Keep the same times at weekends.
C: medium

Q: How do I politely decline an invitation?
A: Thank them warmly, say you cannot make it, and skip long excuses.
- Suggest another time if you mean it.
- Reply promptly.
C: medium

Q: How do I remove a tick?
A: Grip the tick close to the skin with fine tweezers and pull straight up steadily.
- Do not twist or crush it.
- Clean the bite and watch for a rash.
C: high

Q: How do I paint a room?
A: Clean and tape the room, cut in the edges with a brush, then roll on two coats.
- Let each coat dry fully.
- Cover floors and furniture.
C: high

Q: How many hours of sleep do adults need?
A: Most adults need 7 to 9 hours of sleep a night.
- Teenagers need 8 to 10 hours.
- A regular schedule matters too.
C: high

Q: What is a normal resting heart rate?
A: A normal resting heart rate for adults is 60 to 100 beats per minute.
- Fit people often have lower rates.
- Measure it when calm and seated.
C: high

Q: What does vitamin C do?
A: Vitamin C helps build collagen, supports immunity and helps absorb iron.
- Citrus fruit and peppers are rich in it.
- A lack of it causes scurvy.
C: high

Q: Why do muscles get sore after exercise?
A: Soreness comes from tiny muscle damage and inflammation after unfamiliar exercise.
- It peaks 24 to 72 hours later.
- It is not caused by lactic acid.
C: high

Q: Does cracking your knuckles cause arthritis?
A: Studies have not found that cracking your knuckles causes arthritis.
- The pop comes from gas bubbles in the joint fluid.
- It is harmless for most people.
C: high

Q: How much exercise do adults need?
A: Adults should aim for at least 150 minutes of moderate activity a week.
- Add muscle-strengthening work twice a week.
- Any activity is better than none.
C: high

Q: What is blood pressure?
A: Blood pressure is the force of blood pushing against the walls of the arteries.
- It is written as systolic over diastolic.
- Around 120/80 is considered normal.
C: high

Q: Is coffee bad for you?
A: Moderate coffee, up to about 3 to 4 cups a day, seems safe for most adults.
- It may lower the risk of some diseases.
- Pregnant people should limit caffeine.
C: medium

Q: How does the heart pump blood?
A: The heart squeezes in a steady rhythm, pushing blood to the lungs and to the rest of the body.
- It has four chambers.
- Valves keep blood flowing one way.
C: high

Q: What are calories?
A: A calorie is a unit of energy, used to measure the energy in food.
- Food labels use kilocalories.
- Unused energy is stored as fat.
C: high

Q: Why do we get fevers?
A: A fever is the body raising its temperature to help fight an infection.
- It is a normal immune response.
- Above 38 °C usually counts as a fever.
C: high

Q: How many teeth do adults have?
A: Adults usually have 32 teeth, including 4 wisdom teeth.
- Children have 20 baby teeth.
- Many people have their wisdom teeth removed.
C: high

Q: Is it bad to eat late at night?
A: Eating late is not harmful in itself, but big late meals can disturb sleep and digestion.
- Total daily intake matters most for weight.
- Heavy meals may cause heartburn.
C: medium

Q: What do the kidneys do?
A: The kidneys filter waste and extra water from the blood to make urine.
- They also balance salts and blood pressure.
- Most people have two.
- People can live with one healthy kidney.
C: high

Q: Why is sunscreen important?
A: Sunscreen protects skin from UV rays that cause burns, ageing and skin cancer.
- Use SPF 30 or higher.
- Reapply every two hours outdoors.
C: high

Q: How long does a cold usually last?
A: A common cold usually lasts about 7 to 10 days.
- Symptoms peak in the first 2 or 3 days.
- Antibiotics do not help.
C: high

Q: What is cholesterol?
A: Cholesterol is a waxy fat the body uses to build cells and hormones.
- Too much LDL can build up in arteries.
- HDL helps carry cholesterol away.
C: high

Q: Do we only use 10 percent of our brain?
A: No, that is a myth: we use virtually all of our brain.
- Brain scans show activity across all regions.
- Different tasks use different areas.
C: high

Q: How long can a person survive without water?
A: Most people can survive only about three days without water.
- Heat and exertion shorten it.
- Some have survived about a week.
- People can go without food for weeks.
C: medium

Q: What is the best diet for losing weight?
A: There is no single best diet; the one you can stick to long term works best.
- A steady calorie deficit drives weight loss.
- Protein and fibre help you feel full.
C: medium

Q: What is the square root of 144?
A: The square root of 144 is 12.
- 12 times 12 equals 144.
- -12 is also a square root.
C: high

Q: What is pi?
A: Pi is the ratio of a circle's circumference to its diameter, about 3.14159.
- It is an irrational number.
- Its digits never end or repeat.
C: high

Q: What is 15 percent of 80?
A: 15 percent of 80 is 12.
- 10 percent of 80 is 8.
- 5 percent of 80 is 4.
- 8 plus 4 makes 12.
C: high

Q: What is a prime number?
A: A prime is a whole number above 1 divisible only by 1 and itself.
- The first primes are 2, 3, 5, 7 and 11.
- 2 is the only even prime.
C: high

Q: What is the difference between "affect" and "effect"?
A: "Affect" is usually a verb and "effect" is usually a noun.
- The rain affected the match.
- The rain had an effect on the match.
C: high

Q: How many sides does a hexagon have?
A: A hexagon has six sides.
- Each angle of a regular hexagon is 120 degrees.
- Honeycomb cells are hexagons.
C: high

Q: What is the Pythagorean theorem?
A: In a right triangle, a² + b² = c², where c is the hypotenuse.
- A 3-4-5 triangle is an example.
- It only holds for right triangles.
C: high

Q: How do I convert Celsius to Fahrenheit?
A: Multiply the Celsius value by 9/5 and add 32.
- 20 °C is 68 °F.
- 100 °C is 212 °F.
C: high

Q: What is a noun?
A: A noun is a word that names a person, place, thing or idea.
- Examples are teacher, city and freedom.
- Proper nouns are capitalised.
C: high

Q: How many kilometres are in a mile?
A: One mile is about 1.609 kilometres.
- One kilometre is about 0.621 miles.
- A marathon is 42.195 km, or 26.2 miles.
C: high

Q: What is the most spoken language in the world?
A: English has the most speakers in total, while Mandarin Chinese has the most native speakers.
- Both have over a billion speakers.
- Spanish is second for native speakers.
C: medium

Q: What is a haiku?
A: A haiku is a short Japanese poem of three lines with 5, 7 and 5 syllables.
- It often describes nature or a season.
- Basho is a famous haiku poet.
C: high

Q: When do I use "their", "there" and "they're"?
A: "Their" shows ownership, "there" means a place, and "they're" means "they are".
- Their car is red.
- They're parked over there.
C: high

Q: How do I calculate the area of a circle?
A: Multiply pi by the radius squared: A = πr².
- A radius of 2 gives about 12.57.
- The radius is half the diameter.
C: high

Q: What is a fraction?
A: A fraction represents part of a whole, written as one number over another.
- The top number is the numerator.
- The bottom number is the denominator.
C: high

Q: What is 7 times 8?
A: 7 times 8 is 56.
- 8 times 7 gives the same result.
- 56 divided by 7 is 8.
C: high

Q: What is an adjective?
A: An adjective is a word that describes a noun.
- Examples are blue, tall and happy.
- In English it usually comes before the noun.
- Comparatives like taller are adjectives too.
C: high

Q: What is the Fibonacci sequence?
A: Each Fibonacci number is the sum of the two before it.
- It goes 0, 1, 1, 2, 3, 5, 8, 13.
- The ratios approach the golden ratio.
C: high

Q: How many days are in a leap year?
A: A leap year has 366 days.
- February gets a 29th day.
- Most years divisible by 4 are leap years.
C: high

Q: What does "et cetera" mean?
A: "Et cetera" means "and the rest" or "and so on".
- It comes from Latin.
- It is usually shortened to "etc."
C: high

Q: How do I work out an average?
A: Add up the values and divide by how many there are.
- The mean of 2, 4 and 9 is 5.
- The median is the middle value instead.
C: high

Q: How many centimetres are in an inch?
A: One inch is exactly 2.54 centimetres.
- Twelve inches make a foot.
- A foot is 30.48 centimetres.
C: high

Q: What is a palindrome?
A: A palindrome is a word or phrase that reads the same forwards and backwards.
- Examples are "level" and "racecar".
- Numbers like 1221 can be palindromes too.
C: high

Q: Is zero an even number?
A: Yes, zero is an even number.
- It divides by 2 with no remainder.
- It sits between -1 and 1, which are both odd.
C: high

Q: What is a metaphor?
A: A metaphor describes something by saying it is something else.
- "Time is a thief" is an example.
- A simile uses "like" or "as" instead.
C: high

Q: How do I calculate a tip?
A: Multiply the bill by the tip rate, such as 0.15 for 15 percent.
- For 10 percent, move the decimal point one place left.
- Tipping customs vary by country.
C: high

Q: What is the plural of "cactus"?
A: Both "cacti" and "cactuses" are correct plurals of "cactus".
- "Cacti" follows the Latin form.
- "Cactuses" is common in everyday speech.
C: high

Q: What is compound interest?
A: Compound interest is interest earned on both the original money and past interest.
- It makes savings grow faster over time.
- The rule of 72 estimates doubling time.
C: high

Q: How many zeros are in a million?
A: A million has six zeros: 1,000,000.
- A billion has nine.
- A thousand has three.
- A trillion has twelve.
C: high

Q: What is the longest word in English?
A: The longest word in major dictionaries is usually given as "pneumonoultramicroscopicsilicovolcanoconiosis".
- It has 45 letters.
- It names a lung disease.
C: medium

Q: How long do dogs live?
A: Most dogs live about 10 to 13 years.
- Small breeds tend to live longer.
- Giant breeds often live under 10 years.
C: medium

Q: Why do birds migrate?
A: Birds migrate to follow food and good places to breed.
- Many fly toward the equator to avoid winter.
- Some species travel thousands of kilometres.
- They navigate using the Sun, stars and Earth's magnetic field.
C: high

Q: What is the fastest land animal?
A: The cheetah is the fastest land animal.
- It can reach about 100 to 110 km/h.
- It keeps that speed only for short bursts.
C: high

Q: Are bats blind?
A: No, bats are not blind.
- All bats can see.
- Many also use echolocation to hunt in the dark.
- Fruit bats rely mostly on sight and smell.
C: high

Q: How do bees make honey?
A: Bees make honey from flower nectar that they process and dry in the hive.
- Enzymes break down the sugars.
- Fanning wings evaporate the water.
C: high

Q: What is the largest animal that has ever lived?
A: The blue whale is the largest animal known to have lived.
- It can be more than 30 metres long.
- It feeds mainly on krill.
C: high

Q: Why do zebras have stripes?
A: The leading idea is that stripes deter biting flies, though other theories exist.
- Experiments show flies struggle to land on stripes.
- Camouflage and cooling have also been proposed.
C: medium

Q: Do goldfish really have a three-second memory?
A: No, goldfish can remember things for months.
- They can be trained to respond to sounds.
- The three-second idea is a myth.
C: high

Q: How do chameleons change colour?
A: Chameleons change colour by adjusting tiny crystals in their skin that reflect light.
- They do it mainly to signal and control temperature.
- Camouflage is not the main reason.
C: medium

Q: What do pandas eat?
A: Giant pandas eat mostly bamboo.
- Bamboo makes up about 99 percent of their diet.
- They eat for up to 14 hours a day.
C: high

Q: How long do trees live?
A: Many trees live for decades or a few centuries, but some live for thousands of years.
- Bristlecone pines can pass 4,800 years.
- Fast-growing trees tend to live shorter lives.
C: medium

Q: Is a tomato a fruit or a vegetable?
A: Botanically a tomato is a fruit, but in cooking it is treated as a vegetable.
- It grows from the flower and holds seeds.
- A US court called it a vegetable in 1893.
C: high

Q: How many species of insects are there?
A: About a million insect species have been named, and many more remain undiscovered.
- Estimates of the total run to several million.
- Beetles are the largest group.
C: low

Q: Why do dogs wag their tails?
A: Dogs wag their tails mainly to communicate their mood.
- A loose, wide wag often means friendliness.
- A stiff, high wag can signal tension.
C: medium

Q: Can penguins fly?
A: No, penguins cannot fly, but they are excellent swimmers.
- Their wings work as flippers.
- Gentoo penguins can swim at over 30 km/h.
C: high

Q: How do fish breathe?
A: Fish breathe by passing water over their gills, which take oxygen from it.
- Gills have thin filaments full of blood vessels.
- Some fish can also gulp air.
C: high

Q: What is the tallest animal?
A: The giraffe is the tallest animal.
- Males can reach about 5.5 metres.
- Its neck has seven vertebrae, like ours.
- Giraffes live in African savannas.
C: high

Q: Do plants feel pain?
A: Plants have no nerves or brain, so most scientists think they do not feel pain.
- They do respond to damage with chemical signals.
- What plants experience is still debated.
C: medium

Q: How many legs does a spider have?
A: A spider has eight legs.
- Spiders are arachnids, not insects.
- Insects have six legs.
- Spiders also have two fangs.
C: high

Q: How long does a housefly live?
A: A housefly usually lives about 15 to 30 days.
- Warmth speeds up its life cycle.
- A female can lay hundreds of eggs.
C: medium

Q: Why do cats land on their feet?
A: Cats have a righting reflex that lets them twist their body in mid-air.
- Their flexible spine helps.
- Falls can still injure them.
C: high

Q: What is the biggest cat species?
A: The tiger is the largest cat species.
- Siberian tigers can weigh over 300 kg.
- Lions are close behind.
- Tigers are good swimmers.
C: high

Q: How do whales sleep?
A: Many whales rest one half of their brain at a time.
- This lets them keep breathing consciously.
- Sperm whales nap hanging upright in the water.
C: medium

Q: Are mushrooms plants?
A: No, mushrooms belong to the fungi, a separate kingdom of life.
- Fungi do not photosynthesise.
- They are more closely related to animals than to plants.
C: high

Q: How do earthworms help soil?
A: Earthworms mix and aerate the soil and break down dead plant matter.
- Their burrows let water and air in.
- Their castings are rich in nutrients.
C: high

Q: How many people will live on Earth in 2100?
A: UN projections suggest about 10 billion people in 2100, but the range is wide.
- The UN expects the population to peak in the 2080s.
- Birth rates are the main uncertainty.
C: low

Q: Is there intelligent life elsewhere in the universe?
A: Nobody knows; no evidence of intelligent alien life has been found.
- The universe has billions of galaxies.
- Searches such as SETI continue.
C: low

Q: What is the best programming language to learn first?
A: Python is a popular first choice, but the best one depends on your goals.
- JavaScript suits web development.
- Core ideas carry over between languages.
C: medium

Q: Will it rain next week?
A: I cannot know next week's weather, so check a local forecast.
- Forecasts are fairly reliable up to about a week ahead.
- Beyond ten days their accuracy drops sharply.
C: low

Q: How many stars are in the Milky Way?
A: The Milky Way holds an estimated 100 to 400 billion stars.
- Most are small red dwarfs.
- Dust hides many of them from view.
C: low

Q: Who is the greatest footballer of all time?
A: It is a matter of opinion, but Pelé, Maradona and Messi are most often named.
- Messi has won a record eight Ballon d'Or awards.
- Pelé won three World Cups.
C: low

Q: What is the mass of the Earth?
A: Earth's mass is about 5.97 × 10^24 kilograms.
- That is nearly six trillion trillion kilograms.
- It is worked out from measurements of gravity.
C: high

Q: How many words are there in English?
A: Estimates vary widely, from about 170,000 to over 500,000 words.
- It depends on how word forms and technical terms are counted.
- Adults know tens of thousands of them.
C: low

Q: Is breakfast the most important meal of the day?
A: The evidence is mixed; skipping breakfast is not clearly harmful for healthy adults.
- Breakfast may help children concentrate.
- Overall diet quality matters more.
C: medium

Q: When will humans land on Mars?
A: No one knows; crewed Mars landings have been proposed for the 2030s or later.
- Radiation and supplies are big challenges.
- Target dates have slipped many times.
C: low

Q: What is the meaning of life?
A: There is no agreed answer; philosophies and religions offer different views.
- Many people find meaning in relationships and purpose.
- Some say each person creates their own meaning.
C: low

Q: How many hairs are on a human head?
A: A typical head has about 100,000 hairs.
- Blondes tend to have more and redheads fewer.
- People shed about 50 to 100 hairs a day.
C: medium

Q: Do we dream every night?
A: Most people dream every night, even if they do not remember it.
- Vivid dreams happen mainly in REM sleep.
- We have several REM periods each night.
C: medium

Q: Who wrote the Bible?
A: The Bible was written by many authors over many centuries.
- Tradition credits figures such as Moses and Paul.
- Scholars debate who wrote many of its books.
C: medium

Q: How old is the universe?
A: The universe is about 13.8 billion years old.
- The figure comes mainly from the cosmic microwave background.
- Different methods disagree slightly.
C: high

Q: What is inflation?
A: Inflation is the general rise in prices over time, which lowers what money can buy.
- It is measured with price indexes like the CPI.
- Many central banks aim for about 2 percent a year.
C: high

Q: What is a stock?
A: A stock is a share of ownership in a company.
- Its price changes with supply and demand.
- Some stocks pay dividends.
- Stocks trade on exchanges.
C: high

Q: Why is the Mona Lisa so famous?
A: The Mona Lisa is famous for Leonardo's skill, her subtle smile and its theft in 1911.
- It hangs in the Louvre in Paris.
- It was painted in the early 1500s.
C: medium

Q: How does a credit score work?
A: A credit score rates how likely you are to repay debt, based on your credit history.
- Paying on time helps the most.
- Using little of your credit limit also helps.
C: high

Q: What are the Olympic Games?
A: The Olympics are an international sports event held every four years.
- The modern Games began in Athens in 1896.
- Summer and Winter Games alternate every two years.
C: high

Q: How many players are on a soccer team?
A: A soccer team has 11 players on the field, including the goalkeeper.
- Teams can make substitutions.
- A match lasts 90 minutes plus added time.
C: high

Q: What is democracy?
A: Democracy is a system of government in which citizens hold power, usually by voting.
- In direct democracy people vote on laws.
- Most democracies elect representatives.
C: high

Q: What is the difference between a crocodile and an alligator?
A: Alligators have wide, U-shaped snouts, while crocodiles have narrower, V-shaped ones.
- A crocodile's lower teeth show when its mouth is closed.
- Crocodiles cope better with salt water.
C: high

Q: How does a refrigerator keep food cold?
A: A fridge pumps a refrigerant that absorbs heat inside and releases it outside.
- A compressor drives the cycle.
- That is why the coils at the back feel warm.
C: high

Q: What does GDP mean?
A: GDP, gross domestic product, is the total value of goods and services a country produces.
- It is usually measured per year.
- GDP per person roughly compares living standards.
C: high

Q: How does a microwave oven heat food?
A: Microwaves make the water molecules in food vibrate, which creates heat.
- Most ovens use waves of about 2.45 GHz.
- Some metals can cause sparks.
C: high

Q: How do airplanes stay in the air?
A: Wings are shaped and angled to push air downward, which creates lift.
- Engines provide thrust.
- Lift must exceed the plane's weight to climb.
C: high

Q: How many strings does a standard guitar have?
A: A standard guitar has six strings.
- Standard tuning is E A D G B E.
- Bass guitars usually have four.
- Twelve-string guitars also exist.
C: high

Q: What is a solar eclipse?
A: A solar eclipse happens when the Moon passes between Earth and the Sun.
- A total eclipse briefly darkens the day.
- Never look at it without eclipse glasses.
C: high

S: You are a concise assistant.
Q: What is the capital of France?
A: The capital of France is Paris.
- It lies on the river Seine.
- It is also France's largest city.
- About 2 million people live in the city itself.
C: high

S: Keep answers short.
Q: What colour do you get by mixing blue and yellow?
A: Mixing blue and yellow paint gives green.
- Blue and yellow light mix to white instead.
- Red, yellow and blue are the traditional painter's primaries.
C: high

S: You are a helpful assistant.
Q: How do I convert a fraction to a percentage?
A: Divide the top number by the bottom number and multiply by 100.
- 3/4 is 0.75, which is 75 percent.
- Round to one decimal place if needed.
C: high

S: You are a friendly tutor for curious learners.
Q: Why do apples turn brown after you cut them?
A: Cut apples turn brown when an enzyme reacts with oxygen in the air.
- The enzyme is polyphenol oxidase.
- Lemon juice slows the reaction.
C: high

S: You are a helpful assistant.
Q: How long does it take light from the Sun to reach Earth?
A: Sunlight takes about 8 minutes and 20 seconds to reach Earth.
- The Sun is about 150 million km away.
- We see the Sun as it was a few minutes ago.
C: high

S: Answer clearly and briefly.
Q: What is a thesaurus?
A: A thesaurus is a reference book that lists words with similar and opposite meanings.
- It helps you avoid repeating words.
- Roget's Thesaurus first appeared in 1852.
C: high

S: You are a helpful assistant.
Q: How often should I change my car's oil?
A: Follow your car's manual; many modern cars need it every 10,000 to 15,000 km or yearly.
- Older cars may need it more often.
- Short trips and towing wear oil faster.
C: medium

S: You are a careful assistant for a busy household.
Q: How long can leftovers stay out before going in the fridge?
A: Refrigerate leftovers within two hours of cooking.
- Bacteria grow fastest between 5 °C and 60 °C.
- On hot days, aim for one hour.
C: high

S: Keep answers short.
Q: Who painted The Starry Night?
A: Vincent van Gogh painted The Starry Night in 1889.
- He painted it at an asylum in Saint-Rémy, France.
- It hangs in New York's Museum of Modern Art.
C: high

S: You are a helpful assistant.
Q: What is the difference between a hurricane and a tornado?
A: A hurricane is a huge storm that forms over warm oceans, while a tornado is a small, violent funnel over land.
- Hurricanes last days and span hundreds of kilometres.
- Tornadoes usually last minutes.
C: high

S: You are a concise assistant.
Q: Which metal is liquid at room temperature?
A: Mercury is the metal that is liquid at room temperature.
- It is toxic, so old thermometers need careful disposal.
- Gallium melts in a warm hand.
C: high

S: You are a helpful assistant.
Q: How many minutes are in a day?
A: A day has 1,440 minutes.
- That is 24 hours times 60 minutes.
- A day has 86,400 seconds.
C: high

Q: What is the difference between an ocean and a sea?
A: Oceans are the largest bodies of salt water, and seas are smaller parts of them, often near land.
- There are five oceans.
- The Mediterranean is a sea.
C: high

Q: Why do we need to sleep?
A: Sleep lets the body and brain recover, and it helps store memories.
- The brain clears waste during deep sleep.
- Much about sleep is still being studied.
C: medium

Q: What is a calorie deficit?
A: A calorie deficit means using more energy than you eat.
- It makes the body draw on stored fat.
- A small, steady deficit is easier to sustain.
C: high

Q: How do I boil potatoes?
A: Cover chunks of potato with cold salted water, bring it to a boil and simmer for 15 to 20 minutes.
- They are done when a knife slides in easily.
- Starting in cold water cooks them evenly.
C: high

Q: What is a semicolon used for?
A: A semicolon joins two closely related sentences without a conjunction.
- It was late; we went home.
- It also separates items in complex lists.
C: high

Q: Who discovered gravity?
A: Isaac Newton first described gravity as a universal law, in 1687.
- People always knew that things fall.
- Einstein later refined the theory with general relativity.
C: high

Q: What is the Milky Way?
A: The Milky Way is the spiral galaxy that contains our solar system.
- It is about 100,000 light-years across.
- The Sun is in one of its spiral arms.
C: high

Q: What is a carbon footprint?
A: A carbon footprint is the total greenhouse gas emitted by a person, product or activity.
- It is measured in tonnes of CO2 equivalent.
- Flights and heating are big contributors.
C: high

Q: How can I reduce food waste at home?
A: Plan meals, store food properly and use up leftovers first.
- Freeze food before it spoils.
- "Best before" dates are about quality, not safety.
C: medium

Q: What is a mutual fund?
A: A mutual fund pools money from many investors to buy a mix of stocks or bonds.
- A manager or index decides what it holds.
- It spreads risk across many investments.
C: high

Q: What is the speed of sound?
A: Sound travels at about 343 metres per second in air at 20 °C.
- It is faster in water and in steel.
- Warmer air carries sound slightly faster.
C: high

Q: How do I make a paper airplane?
A: Fold a sheet in half lengthwise, fold the top corners to the centre, fold again, then fold down the wings.
- Crisp creases help it fly straight.
- Bend the back edges slightly to adjust its path.
C: medium

Q: How many bytes are in a kilobyte?
A: A kilobyte is 1,000 bytes in the decimal system.
- 1,024 bytes is formally a kibibyte.
- Some software still uses 1,024.
C: high

Q: What is the tallest tree species?
A: The coast redwood is the tallest tree species.
- The tallest known one is about 116 metres.
- Redwoods grow along the coast of California.
C: high

Q: Who composed the Four Seasons?
A: Antonio Vivaldi composed The Four Seasons.
- It is a set of four violin concertos.
- It was published in 1725.
C: high

Q: What is a sonnet?
A: A sonnet is a poem of 14 lines with a set rhyme scheme.
- Shakespeare wrote 154 of them.
- Petrarch made the form popular in Italy.
C: high

Q: What is a spreadsheet formula to add up a column?
A: Use the SUM function, for example =SUM(A1:A10).
- It adds every number in the range.
- Empty cells and text are ignored.
C: high

Q: How do noise-cancelling headphones work?
A: They use microphones to pick up outside noise and play an opposite sound wave that cancels it.
- They work best on steady sounds like engines.
- Sudden noises are harder to cancel.
C: high

Q: What is the difference between a town and a city?
A: A city is usually larger than a town, but the legal line between them differs by country.
- In the UK, city status is granted by the monarch.
- In the US, the rules vary by state.
C: medium

Q: How many people have ever lived?
A: Demographers estimate that roughly 100 to 120 billion people have ever lived.
- The figure depends on when humans are counted from.
- Early population sizes are guesses.
C: low

Q: What will the stock market do next year?
A: Nobody can reliably predict next year's stock market.
- Short-term moves are largely unpredictable.
- Over decades, broad markets have tended to rise.
C: low

Q: How many languages are spoken in the world?
A: About 7,000 languages are spoken in the world today.
- The count depends on how languages and dialects are told apart.
- Many of them are endangered.
C: medium

Q: Was King Arthur a real person?
A: Historians are unsure, and there is no solid evidence that King Arthur existed.
- The first stories about him were written centuries later.
- He may be based on one or more real leaders.
C: low

Q: Who built Stonehenge?
A: Stonehenge was built by Neolithic people in Britain, starting around 3000 BC.
- Some of its stones came from Wales, over 200 km away.
- Its exact purpose is still debated.
C: medium

Q: Why did the dinosaurs die out?
A: An asteroid impact about 66 million years ago wiped out most dinosaurs.
- The Chicxulub crater in Mexico marks the impact.
- Huge volcanic eruptions may also have played a part.
- Birds are the surviving dinosaurs.
C: high

Q: What did dinosaurs sound like?
A: Nobody knows exactly, but some dinosaurs may have made closed-mouth booming calls like birds.
- Sounds do not fossilise.
- Hollow head crests may have amplified calls.
C: low

Q: How many planets in our galaxy could support life?
A: Nobody knows, but estimates suggest billions of Earth-sized planets orbit in habitable zones.
- Habitable does not mean inhabited.
- Life has been confirmed only on Earth.
C: low

Q: Is red wine good for your heart?
A: The evidence is weak, and any benefit may be outweighed by the risks of alcohol.
- Earlier studies that suggested a benefit had flaws.
- Health bodies do not advise starting to drink.
C: low

Q: Are cats or dogs better pets?
A: Neither is better overall; it depends on your lifestyle and home.
- Dogs need more time and exercise.
- Cats suit smaller spaces and busy schedules.
C: low

Q: How long will the Sun keep shining?
A: The Sun should keep shining for about another 5 billion years.
- It is roughly halfway through its life.
- It will then swell into a red giant.
C: medium

Q: What will be the next big invention?
A: Nobody can know, though many people point to advances in AI, energy storage and medicine.
- Big inventions are often surprises.
- Predictions from the past were often wrong.
C: low
"""

# Prompts for the held-out check: none appears in CARDS; the model never trains on them.
HELDOUT_PROMPTS = [
    "What is the capital of Italy?",
    "How do I make pancakes?",
    "Why do we have leap years?",
    "What is a carbohydrate?",
    "What should I do if I forget my Wi-Fi password?",
    "Who painted the ceiling of the Sistine Chapel?",
    "How long should I cook spaghetti?",
    "What is a comet?",
    "How do I get red wine out of a carpet?",
    "What is the difference between a byte and a kilobyte?",
    "Why do we sneeze?",
    "Who was Isaac Newton?",
    "How many oceans are there?",
    "What is a hurricane?",
    "How do I keep my laptop from overheating?",
    "Is chocolate bad for dogs?",
    "What is the tallest building in the world?",
    "How do I make a simple tomato sauce?",
    "What is a mortgage?",
    "How long does the Moon take to orbit Earth?",
]


class CardError(ValueError):
    """A hand-written card is malformed; the message names the card."""


def parse_cards(text: str) -> list[dict[str, Any]]:
    """Split the card text into dicts with system, question, answer, points, confidence."""
    cards = []
    for block in (b.strip() for b in text.strip().split("\n\n")):
        card: dict[str, Any] = {"system": None, "points": []}
        for line in block.splitlines():
            tag, _, value = line.partition(" ")
            key = {"S:": "system", "Q:": "question", "A:": "answer", "C:": "confidence"}.get(tag)
            if tag == "-":
                card["points"].append(value)
            elif key and card.get(key) is None:
                card[key] = value
            else:
                raise CardError(f"card {block.splitlines()[0]!r}: unexpected line {line!r} "
                                f"(unknown tag, a repeated tag, or a missing blank line)")
        for key in ("question", "answer", "confidence"):
            if not card.get(key):
                raise CardError(f"card {block.splitlines()[0]!r}: missing {key}")
        cards.append(card)
    return cards


def render(card: dict[str, Any]) -> str:
    """The assistant reply: the answer card the fine-tune teaches."""
    points = "".join(f"- {p}\n" for p in card["points"])
    return f"Answer: {card['answer']}\nKey points:\n{points}Confidence: {card['confidence']}"


def train_rows() -> list[dict[str, Any]]:
    """Training rows in a fixed shuffled order, each checked against the format regex."""
    rows = []
    for card in parse_cards(CARDS):
        reply = render(card)
        if not FORMAT_PATTERN.search(reply):
            raise CardError(f"card {card['question']!r} does not match the answer-card format")
        messages = [{"role": "system", "content": card["system"]}] if card["system"] else []
        messages += [{"role": "user", "content": card["question"]},
                     {"role": "assistant", "content": reply}]
        rows.append({"messages": messages})
    random.Random(SEED).shuffle(rows)  # mix topics so any prefix of the file is varied
    return rows


def heldout_rows() -> list[dict[str, Any]]:
    """Held-out prompts, each carrying the regex that scores its answer."""
    return [{"messages": [{"role": "user", "content": p}], "pattern": FORMAT_REGEX}
            for p in HELDOUT_PROMPTS]


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    """Regenerate both files atomically."""
    from studio.fsutil import atomic_write_text

    train, held = train_rows(), heldout_rows()
    atomic_write_text(TRAIN, to_jsonl(train))
    atomic_write_text(HELDOUT, to_jsonl(held))
    print(f"wrote {len(train)} rows to {TRAIN} and {len(held)} rows to {HELDOUT}")


if __name__ == "__main__":
    main()
